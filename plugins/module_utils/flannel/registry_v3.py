"""etcd v3 access in flannel's v3 layout, through etcd's JSON gateway (/v3/...) on urllib3.

The same keys and JSON as the v2 registry (<prefix>/config, <prefix>/subnets/A.B.C.D-LEN) and the
same interface, so the agent and the modules use either (chosen by -etcd-api / etcd_api).
A subnet lease is held by an etcd lease of its own (granted with the TTL, kept alive on renewal);
a lease key is created only if absent (a transaction on create_revision == 0) and changed or
deleted only at the mod_revision it was read at. Watches are one streaming request, read by a
thread; a broken stream is resumed from the last revision seen, a compacted one asks for a resync.
Pure Python (urllib3 only), so the agent's zipapp runs on a bare python3.
"""

import base64
import json
import time

try:
    import urllib3
except ImportError:  # reported by the caller through missing_libraries()
    urllib3 = None

from .etcd_http import (REPLY_SECONDS, BadReply, BoundedHTTP, LineStream, RequestGate, checked_v3_kv, excerpt,
                        json_object, read_body)
from .lease import Lease, LeaseAttrs, checked_lease, is_leasable_key
from .registry import (DEFAULT_ENDPOINTS, DEFAULT_PREFIX, ConfigEvent, ConfigMissing, EtcdRegistry, IndexCleared,
                       LeaseEvent, LeaseListing, RegistryAuthError, RegistryError, RegistryUnavailable,
                       UnreadableKeyRemoved, _root_cause, counted, parse_endpoints, subnet_of_key, unanswered)
from .registry_v3_watch import WatchStream

# gRPC status codes the gateway returns (google.golang.org/grpc/codes).
_INVALID_ARGUMENT, _DEADLINE, _NOT_FOUND, _PERMISSION, _OUT_OF_RANGE, _UNAVAILABLE, _UNAUTHENTICATED = (
    3, 4, 5, 7, 11, 14, 16)
_AUTH_WORDS = ("auth", "user name is empty", "permission denied", "invalid user")
_UNSERVED_WORDS = ("no leader", "timed out", "leader changed", "not capable", "too many requests", "stopped")
# etcd's answer to /v3/auth/authenticate while its auth is off.
_AUTH_OFF = "authentication is not enabled"
_UNKNOWN = object()


def _b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _unb64(data, as_text=True):
    raw = base64.b64decode(data or "")
    return raw.decode("utf-8", "replace") if as_text else raw


def _prefix_end(prefix):
    """The range_end that makes a range or watch cover every key starting with `prefix`."""
    raw = bytearray(prefix.encode("utf-8"))
    raw[-1] += 1  # prefixes here end in "/", never in 0xff
    return bytes(raw).decode("utf-8")


class _Unserved(Exception):
    """This endpoint cannot answer now: try the next one."""


class V3Lease(Lease):
    """A lease read from etcd v3: `etcd_lease` is the id of the etcd lease holding its key (0: a
    reservation without TTL). Its remaining TTL is asked of etcd only when someone reads it: the
    agent never needs its peers' TTLs."""

    def __init__(self, subnet, attrs, etcd_lease, modified_index, registry, ttl=_UNKNOWN, created_index=0):
        self.etcd_lease = etcd_lease
        self._registry = registry
        super().__init__(subnet, attrs, ttl=None if not etcd_lease else ttl, modified_index=modified_index,
                         created_index=created_index)

    @property
    def ttl(self):
        if self._ttl is _UNKNOWN:
            self._ttl = self._registry.remaining_ttl(self.etcd_lease)
        return self._ttl

    @ttl.setter
    def ttl(self, value):
        self._ttl = value

    @property
    def is_reservation(self):
        return not self.etcd_lease

    def __repr__(self):
        return "Lease(%s, %r, etcd lease %x, revision=%r)" % (
            self.subnet, self.attrs, self.etcd_lease, self.modified_index)


def _revision(data):
    return int(data["header"]["revision"])


def _code(data):
    """The gRPC code of an error answer (0 when it has none that is a number)."""
    try:
        return int(data.get("code", 0) or 0)
    except (TypeError, ValueError):
        return 0


class EtcdV3Registry:
    """flannel's registry on etcd's v3 API, failing over between endpoints."""

    api = "v3"
    config_key = EtcdRegistry.config_key
    subnets_key = EtcdRegistry.subnets_key
    lease_key = EtcdRegistry.lease_key
    host_claim_key = EtcdRegistry.host_claim_key
    onlink = EtcdRegistry.onlink

    def __init__(self, endpoints=DEFAULT_ENDPOINTS, prefix=DEFAULT_PREFIX, ca_file=None, cert_file=None,
                 key_file=None, username=None, password=None, timeout=5.0):
        self.prefix = "/" + prefix.strip("/")
        self.timeout = timeout
        self._endpoints = ["%s://%s:%d" % parsed for parsed in parse_endpoints(endpoints)]
        tls = {}
        if ca_file:
            tls.update(cert_reqs="CERT_REQUIRED", ca_certs=ca_file)
        if cert_file:
            tls.update(cert_file=cert_file, key_file=key_file)
        # Every reply is read within etcd_http's limits, and SIGTERM can end the request it waits in.
        self.gate = RequestGate()
        self._http = BoundedHTTP(urllib3.PoolManager(num_pools=len(self._endpoints) + 1, retries=False,
                                                     timeout=urllib3.Timeout(connect=timeout, read=timeout), **tls),
                                 self.gate)
        self._credentials = (username, password) if username else None
        self._token = None
        self._current = 0
        self._granted = {}  # etcd lease id -> (granted TTL, monotonic time it runs out), ours only
        self._watch = None
        self._spare = None  # (etcd lease id, TTL) granted for a create that lost its race
        self.onlink_prefixes = None

    # ---- the gateway -----------------------------------------------------------------------

    def _post(self, base, path, body, stream=False):
        headers = {"Content-Type": "application/json"}
        if self._credentials and path != "/v3/auth/authenticate":
            if self._token is None:
                self._token = self._authenticate(base)
            if self._token:
                headers["Authorization"] = self._token
        encoded = json.dumps(body).encode("utf-8")
        try:
            if stream:
                return self._http.open_stream("POST", base + path, body=encoded, headers=headers)
            return self._http.request("POST", base + path, body=encoded, headers=headers)
        except BadReply:
            raise
        except urllib3.exceptions.HTTPError as err:
            raise _Unserved(_root_cause(err))

    def _answer(self, base, path, body):
        """The decoded answer of one endpoint; _Unserved when it cannot serve now, BadReply when
        its answer is not etcd's."""
        for attempt in (1, 2):
            response = self._post(base, path, body)
            try:
                data = json_object(response.data, base)
            except BadReply:
                if response.status == 200:
                    raise
                raise _Unserved("HTTP %d: %s" % (response.status, excerpt(bytes(response.data[:200]), 100)))
            if response.status == 200 and "error" not in data:
                return data
            code = _code(data)
            message = excerpt(data.get("message") or data.get("error") or "HTTP %d" % response.status)
            error = self._error_for(base, code, message)
            # An expired token, or auth turned on since we found it off: authenticate again, once.
            if self._credentials and attempt == 1 and (
                    code == _UNAUTHENTICATED or (self._token == "" and isinstance(error, RegistryAuthError))):
                self._token = None
                continue
            raise error
        raise RegistryAuthError("etcd at %s refused a fresh token under %s" % (base, self.prefix))

    def _error_for(self, base, code, message):
        """The exception for an error etcd answered with (gRPC code, message)."""
        lowered = message.lower()
        if code in (_PERMISSION, _UNAUTHENTICATED) or (
                code in (0, _INVALID_ARGUMENT) and any(word in lowered for word in _AUTH_WORDS)):
            return RegistryAuthError("etcd at %s refused access to %s: %s (check -etcd-username and "
                                     "-etcd-password, and the user's role)" % (base, self.prefix, message))
        if code in (_UNAVAILABLE, _DEADLINE) or any(word in lowered for word in _UNSERVED_WORDS):
            return _Unserved(message)
        if code == _OUT_OF_RANGE and "compacted" in lowered:
            return IndexCleared(message)
        return RegistryError("etcd refused an operation under %s: %s" % (self.prefix, message))

    def _stream_error_for(self, base):
        """How a watch stream turns etcd's reason for ending it into an exception."""
        def error_for(message):
            error = self._error_for(base, 0, message)
            if isinstance(error, (RegistryAuthError, IndexCleared)):
                return error
            return RegistryUnavailable("etcd at %s ended the watch: %s" % (base, message))
        return error_for

    def _authenticate(self, base):
        """A token for the credentials; "" when etcd's auth is off: etcd then serves everyone, as
        its v2 API does when given a user anyway, and etcd's own v3 client goes on without a token."""
        try:
            data = self._answer(base, "/v3/auth/authenticate",
                                {"name": self._credentials[0], "password": self._credentials[1]})
        except RegistryError as err:
            if _AUTH_OFF in str(err):
                return ""
            raise
        if not isinstance(data.get("token"), str):
            raise BadReply(base, "wrong shape: no token in etcd's answer to /v3/auth/authenticate")
        return data["token"]

    def _call(self, path, body, read=None):
        """POST to the current endpoint, moving to the next one when it cannot serve or its answer
        is not etcd's; `read` takes what is used from the answer (a KeyError, TypeError or
        ValueError there means the answer has the wrong shape)."""
        last_error = bad_reply = None
        for _attempt in range(len(self._endpoints)):
            base = self._endpoints[self._current]
            try:
                data = self._answer(base, path, body)
                try:
                    return read(data) if read else data
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise BadReply(base, "wrong shape: not etcd's answer to %s" % path)
            except BadReply as err:
                last_error = bad_reply = err
            except _Unserved as err:
                last_error = err
                self._token = None
            self._current = (self._current + 1) % len(self._endpoints)
        raise unanswered(self._endpoints, last_error, bad_reply)

    # ---- keys, transactions and etcd leases ------------------------------------------------

    def _range(self, key, prefix=False):
        """([kv], revision) of one key, or of every key under a prefix."""
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(_prefix_end(key))
        return self._call("/v3/kv/range", body, lambda data: ([checked_v3_kv(kv) for kv in data.get("kvs") or []],
                                                              _revision(data)))

    def _put(self, key, value, etcd_lease=0):
        return self._call("/v3/kv/put", {"key": _b64(key), "value": _b64(value), "lease": etcd_lease}, _revision)

    def _txn(self, compare, success):
        """(succeeded, revision after the transaction)."""
        def read(data):
            if not isinstance(data.get("succeeded", False), bool):
                raise TypeError("succeeded")
            return bool(data.get("succeeded")), _revision(data)
        return self._call("/v3/kv/txn", {"compare": [compare], "success": success}, read)

    @staticmethod
    def _compare(key, target, value):
        field = {"CREATE": "create_revision", "MOD": "mod_revision", "VALUE": "value"}[target]
        return {"key": _b64(key), "target": target, "result": "EQUAL",
                "%s" % field: _b64(value) if target == "VALUE" else value}

    @staticmethod
    def _put_op(key, value, etcd_lease):
        return {"request_put": {"key": _b64(key), "value": _b64(value), "lease": etcd_lease}}

    def _grant(self, ttl):
        lease_id, granted = self._call("/v3/lease/grant", {"TTL": int(ttl)},
                                       lambda data: (int(data["ID"]), int(data["TTL"])))
        now = time.monotonic()
        # Forget the leases that ran out (their keys are gone), so the table stays small.
        for stale in [known for known, (_ttl, ends) in self._granted.items() if ends < now]:
            del self._granted[stale]
        self._granted[lease_id] = (granted, now + granted)
        return lease_id

    def _reuse_spare(self, ttl):
        """The etcd lease of a create that lost its race, if it has this TTL and is still almost
        whole (a second old at most), else 0 (and it is revoked)."""
        spare, self._spare = self._spare, None
        if spare is None:
            return 0
        lease_id, spare_ttl = spare
        granted, runs_out = self._granted.get(lease_id, (0, 0))
        if spare_ttl == ttl and granted == ttl and runs_out - time.monotonic() > ttl - 1:
            return lease_id
        self._revoke(lease_id)
        return 0

    def _keepalive(self, lease_id):
        """Refresh an etcd lease to its granted TTL; the TTL, 0 when it no longer exists."""
        ttl = self._call("/v3/lease/keepalive", {"ID": lease_id},
                         lambda data: int((data.get("result") or {}).get("TTL", 0) or 0))
        if ttl > 0:
            self._granted[lease_id] = (ttl, time.monotonic() + ttl)
        else:
            self._granted.pop(lease_id, None)
        return ttl

    def _revoke(self, lease_id):
        """Best effort: a lease holding no key is only clutter, and expires by itself anyway."""
        self._granted.pop(lease_id, None)
        try:
            self._call("/v3/lease/revoke", {"ID": lease_id})
        except RegistryError:
            pass

    def _time_to_live(self, lease_id):
        """(remaining, granted) seconds of an etcd lease; remaining is 0 when it is gone."""
        return self._call("/v3/lease/timetolive", {"ID": lease_id},
                          lambda data: (max(int(data.get("TTL", -1)), 0), int(data.get("grantedTTL", 0) or 0)))

    def remaining_ttl(self, lease_id):
        """Seconds left on an etcd lease: from this registry's own grants and refreshes when it made
        them (no request), else asked of etcd."""
        known = self._granted.get(lease_id)
        if known is not None:
            return max(int(known[1] - time.monotonic()), 0)
        return self._time_to_live(lease_id)[0]

    def _granted_ttl(self, lease_id):
        known = self._granted.get(lease_id)
        return known[0] if known is not None else self._time_to_live(lease_id)[1]

    # ---- network config -------------------------------------------------------------------

    @counted("get_config")
    def get_config(self):
        """The raw config text; ConfigMissing when the key does not exist."""
        kvs = self._range(self.config_key)[0]
        if not kvs:
            raise ConfigMissing("%s does not exist in etcd's v3 keyspace (written with the v2 API? -etcd-api=v3 "
                                "reads v3)" % self.config_key)
        return _unb64(kvs[0].get("value"))

    @counted("put_config")
    def put_config(self, text):
        self._put(self.config_key, text)

    # ---- leases ---------------------------------------------------------------------------

    def _lease_from_kv(self, kv, config=None, ttl=_UNKNOWN):
        subnet = subnet_of_key(_unb64(kv["key"]), self.subnets_key)
        attrs = LeaseAttrs.from_json(_unb64(kv.get("value"), as_text=False))
        return checked_lease(V3Lease(subnet, attrs, int(kv.get("lease", 0) or 0),
                                     int(kv.get("mod_revision", 0) or 0), self, ttl=ttl,
                                     created_index=int(kv.get("create_revision", 0) or 0)), config, self.onlink())

    @counted("list_leases")
    def list_leases(self, config=None):
        """Every lease under subnets/, checked (against `config` when given)."""
        kvs, revision = self._range(self.subnets_key + "/", prefix=True)
        leases, skipped, taken = [], [], []
        for kv in kvs:
            key = _unb64(kv["key"])
            try:
                taken.append(subnet_of_key(key, self.subnets_key))
                leases.append(self._lease_from_kv(kv, config))
            except ValueError as err:
                skipped.append((key, str(err)))
        return LeaseListing(leases, revision, skipped, taken)

    @counted("get_lease")
    def get_lease(self, subnet):
        """The lease for a subnet, or None."""
        kvs = self._range(self.lease_key(subnet))[0]
        return self._lease_from_kv(kvs[0]) if kvs else None

    @counted("create_lease")
    def create_lease(self, subnet, attrs, ttl):
        """Create a lease only if the key is free; None when another host got there first."""
        key = self.lease_key(subnet)
        etcd_lease = self._reuse_spare(ttl) or (self._grant(ttl) if ttl else 0)
        created, revision = self._txn(self._compare(key, "CREATE", 0), [self._put_op(key, attrs.to_json(), etcd_lease)])
        if not created:
            if etcd_lease:
                # Kept for the next attempt, which then costs one request, as on v2: a race lost
                # to a crowd of agents must not widen the window of the next one.
                self._spare = (etcd_lease, ttl)
            return None
        return V3Lease(subnet, attrs, etcd_lease, revision, self, ttl=ttl or None, created_index=revision)

    @counted("update_lease")
    def update_lease(self, lease, attrs, ttl):
        """Rewrite a lease if it is unchanged since it was read; None when it changed or vanished.

        An unchanged value with the same TTL only has its etcd lease kept alive, which wakes no
        watcher; another value or TTL is a new etcd lease put in one transaction.
        """
        key = self.lease_key(lease.subnet)
        etcd_lease = getattr(lease, "etcd_lease", 0)
        if attrs == lease.attrs and ttl and etcd_lease and self._granted_ttl(etcd_lease) == ttl:
            remaining = self._keepalive(etcd_lease)
            kvs = self._range(key)[0] if remaining else []
            if not kvs or int(kvs[0].get("mod_revision", 0)) != lease.modified_index:
                return None
            return V3Lease(lease.subnet, attrs, etcd_lease, lease.modified_index, self, ttl=remaining,
                           created_index=lease.created_index)
        new_lease = self._grant(ttl) if ttl else 0
        updated, revision = self._txn(self._compare(key, "MOD", lease.modified_index),
                                      [self._put_op(key, attrs.to_json(), new_lease)])
        if not updated:
            if new_lease:
                self._revoke(new_lease)
            return None
        if etcd_lease and etcd_lease != new_lease:
            self._revoke(etcd_lease)  # it held only this key, which now has the new lease
        return V3Lease(lease.subnet, attrs, new_lease, revision, self, ttl=ttl or None,
                       created_index=lease.created_index)

    @counted("delete_lease")
    def delete_lease(self, lease):
        """Delete a lease if it is unchanged since it was read; False when it changed or vanished."""
        key = self.lease_key(lease.subnet)
        deleted = self._txn(self._compare(key, "MOD", lease.modified_index),
                            [{"request_delete_range": {"key": _b64(key)}}])[0]
        if deleted and getattr(lease, "etcd_lease", 0):
            self._revoke(lease.etcd_lease)
        return deleted

    # ---- public IP claims (ours; flannel ignores keys outside config and subnets) ---------

    @counted("claim_public_ip")
    def claim_public_ip(self, public_ip, host_id, ttl):
        """Hold <prefix>/netlab-hosts/<ip> for `host_id` for `ttl` s; keep it alive when already ours.

        Returns None when held, else the id of the live host that holds it.
        """
        key = self.host_claim_key(public_ip)
        value = json.dumps({"HostID": host_id}, separators=(",", ":"))
        for _attempt in range(3):
            kvs = self._range(key)[0]
            if not kvs:
                etcd_lease = self._grant(ttl)
                if self._txn(self._compare(key, "CREATE", 0), [self._put_op(key, value, etcd_lease)])[0]:
                    return None
                self._revoke(etcd_lease)
                continue
            kv = kvs[0]
            if _unb64(kv.get("value")) != value:
                try:
                    return str(json.loads(_unb64(kv.get("value"))).get("HostID", "unknown"))
                except (TypeError, ValueError, AttributeError):
                    return "unknown (unreadable claim at %s)" % key
            held_by = int(kv.get("lease", 0) or 0)
            if held_by and self._keepalive(held_by):
                return None
            # Ours but without a live etcd lease (written by hand, or it ran out just now): re-put it.
            etcd_lease = self._grant(ttl)
            if self._txn(self._compare(key, "MOD", int(kv["mod_revision"])), [self._put_op(key, value, etcd_lease)])[0]:
                return None
            self._revoke(etcd_lease)
        raise RegistryError("could not claim %s: it changed three times in a row" % key)

    # ---- watch ----------------------------------------------------------------------------

    def _open_watch(self, watched, start_revision):
        body = {"create_request": {"key": _b64(watched), "range_end": _b64(_prefix_end(watched)),
                                   "start_revision": start_revision}}
        last_error = bad_reply = None
        for _attempt in range(len(self._endpoints)):
            base = self._endpoints[self._current]
            try:
                response = self._post(base, "/v3/watch", body, stream=True)
                if response.status != 200:
                    try:
                        deadline = time.monotonic() + self.timeout + REPLY_SECONDS
                        data = json_object(read_body(response, base, deadline), base)
                    finally:
                        response.close()
                    raise self._error_for(base, _code(data), excerpt(data.get("message") or response.status))
                lines = LineStream(response, base, self.timeout, self.gate)
                return WatchStream(lines, watched, start_revision - 1, self._stream_error_for(base))
            except BadReply as err:
                last_error = bad_reply = err
            except _Unserved as err:
                last_error = err
                self._token = None
            self._current = (self._current + 1) % len(self._endpoints)
        raise unanswered(self._endpoints, last_error, bad_reply)

    def close(self):
        """End the watch stream, if one is open."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    @counted("watch_leases")
    def watch_leases(self, after_index, timeout, config=None, with_config=False):
        """Wait up to `timeout` s for the next change after revision `after_index`.

        Returns (events, next_index, skipped) exactly as the v2 registry does (with `with_config`,
        the whole prefix, the config's changes as ConfigEvents). One watch stream is
        kept open between calls; when it breaks it is reopened from the last revision handed
        out, so nothing written meanwhile is missed. Raises IndexCleared when etcd compacted
        that history away.
        """
        watched = (self.prefix if with_config else self.subnets_key) + "/"
        stream = self._watch
        if stream is None or stream.dead or stream.watched != watched or stream.position != after_index:
            self.close()
            stream = self._watch = self._open_watch(watched, after_index + 1)
        try:
            event = stream.next_event(timeout)
        except RegistryUnavailable:
            self.close()  # e.g. etcd restarted: resume where the stream stopped
            stream = self._watch = self._open_watch(watched, after_index + 1)
            event = stream.next_event(timeout)
        if event is None:
            return [], after_index, None
        kv = event.get("kv") or {}
        next_index = stream.position = int(kv.get("mod_revision", 0) or 0)
        key = _unb64(kv.get("key"))
        if key == self.config_key:
            return [ConfigEvent(None if event.get("type") == "DELETE" else _unb64(kv.get("value")))], next_index, None
        if not key.startswith(self.subnets_key + "/"):
            return [], next_index, None  # public IP claims
        try:
            subnet = subnet_of_key(key, self.subnets_key)
        except ValueError as err:
            if event.get("type") == "DELETE":
                return [UnreadableKeyRemoved(key)], next_index, None
            return [], next_index, (key, str(err))
        if event.get("type") == "DELETE":
            return [LeaseEvent(subnet, None)], next_index, None
        try:
            lease = self._lease_from_kv(kv, config)
        except ValueError as err:
            removed = [LeaseEvent(subnet, None)] if config is None or is_leasable_key(subnet, config) else []
            return removed, next_index, (key, str(err))
        return [LeaseEvent(lease.subnet, lease)], next_index, None
