"""flannel's registry on etcd's v3 API, through etcd's JSON gateway (v3_gateway.py, urllib3 only,
so the agent's zipapp runs on a bare python3).

The same keys and JSON as the v2 registry (<prefix>/config, <prefix>/subnets/A.B.C.D-LEN), so the
agent and the modules use either (chosen by -etcd-api / etcd_api).
A subnet lease is held by an etcd lease of its own (granted with the TTL, kept alive on renewal);
a lease key is created only if absent (a transaction on create_revision == 0) and changed or
deleted only at the mod_revision it was read at. Watches are one streaming request, read by a
thread; a broken stream is resumed from the last revision seen, a compacted one asks for a resync,
as does one on another cluster than the listing's, or on a store whose revision went back.
"""

import time

from ..etcd_http import checked_v3_kv
from ..lease import Lease, LeaseAttrs, checked_lease
from .base import DEFAULT_ENDPOINTS, DEFAULT_PREFIX, Registry, claim_holder, claim_value, counted, subnets_of_key
from .errors import ConfigMissing, RegistryError, RegistryUnavailable
from .v3_gateway import Gateway, b64 as _b64, prefix_end, unb64 as _unb64

_UNKNOWN = object()


class V3Lease(Lease):
    """A lease read from etcd v3: `etcd_lease` is the id of the etcd lease holding its key (0: a
    reservation without TTL). Its remaining TTL is asked of etcd only when someone reads it: the
    agent never needs its peers' TTLs."""

    def __init__(self, subnet, attrs, etcd_lease, modified_index, registry, ttl=_UNKNOWN, created_index=0,
                 ipv6_subnet=None):
        self.etcd_lease = etcd_lease
        self._registry = registry
        super().__init__(subnet, attrs, ttl=None if not etcd_lease else ttl, modified_index=modified_index,
                         created_index=created_index, ipv6_subnet=ipv6_subnet)

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
            self.key, self.attrs, self.etcd_lease, self.modified_index)


def _revision(data):
    return int(data["header"]["revision"])


class EtcdV3Registry(Registry):
    """flannel's registry on etcd's v3 API, failing over between endpoints."""

    api = "v3"

    def __init__(self, endpoints=DEFAULT_ENDPOINTS, prefix=DEFAULT_PREFIX, ca_file=None, cert_file=None,
                 key_file=None, username=None, password=None, timeout=5.0):
        super().__init__(prefix, timeout)
        self._gateway = Gateway(endpoints, self.prefix, timeout, self.gate, ca_file=ca_file, cert_file=cert_file,
                                key_file=key_file, username=username, password=password)
        self._endpoints = self._gateway.endpoints
        self._granted = {}  # etcd lease id -> (granted TTL, monotonic time it runs out), ours only
        self._watch = None
        # The cluster the revisions handed out belong to (the listing's, else the watch's): a watch
        # on another is IndexCleared until a listing there (v3_watch.py).
        self._cluster_id = None
        self._spare = None  # (etcd lease id, TTL) granted for a create that lost its race

    # ---- keys, transactions and etcd leases ------------------------------------------------

    def _call(self, path, body, read=None):
        return self._gateway.call(path, body, read)

    def _range(self, key, prefix=False):
        """([kv], revision, cluster ID) of one key, or of every key under a prefix."""
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        return self._call("/v3/kv/range", body, lambda data: ([checked_v3_kv(kv) for kv in data.get("kvs") or []],
                                                              _revision(data), data["header"].get("cluster_id")))

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
        kvs = self._range(self.config_key)[0]
        if not kvs:
            raise ConfigMissing("%s does not exist in etcd's v3 keyspace (written with the v2 API? -etcd-api=v3 "
                                "reads v3)" % self.config_key)
        return _unb64(kvs[0].get("value"))

    @counted("put_config")
    def put_config(self, text):
        self._put(self.config_key, text)

    # ---- leases ---------------------------------------------------------------------------

    def _lease_from_node(self, node, config=None, subnets=None, ttl=_UNKNOWN):
        """`node`: a key-value of etcd's answer (checked_v3_kv)."""
        subnet, ipv6_subnet = subnets or subnets_of_key(_unb64(node["key"]), self.subnets_key)
        attrs = LeaseAttrs.from_json(_unb64(node.get("value"), as_text=False))
        return checked_lease(V3Lease(subnet, attrs, int(node.get("lease", 0) or 0),
                                     int(node.get("mod_revision", 0) or 0), self, ttl=ttl,
                                     created_index=int(node.get("create_revision", 0) or 0), ipv6_subnet=ipv6_subnet),
                             config, self.onlink())

    def _config_text(self, node):
        return _unb64(node.get("value"))

    @counted("list_leases")
    def list_leases(self, config=None):
        kvs, revision, self._cluster_id = self._range(self.subnets_key + "/", prefix=True)
        return self._listing([(_unb64(kv["key"]), kv) for kv in kvs], revision, config)

    @counted("get_lease")
    def get_lease(self, subnet, ipv6_subnet=None):
        kvs = self._range(self.lease_key(subnet, ipv6_subnet))[0]
        return self._lease_from_node(kvs[0]) if kvs else None

    @counted("create_lease")
    def create_lease(self, subnet, attrs, ttl, ipv6_subnet=None):
        key = self.lease_key(subnet, ipv6_subnet)
        etcd_lease = self._reuse_spare(ttl) or (self._grant(ttl) if ttl else 0)
        created, revision = self._txn(self._compare(key, "CREATE", 0), [self._put_op(key, attrs.to_json(), etcd_lease)])
        if not created:
            if etcd_lease:
                # Kept for the next attempt, which then costs one request, as on v2: a race lost
                # to a crowd of agents must not widen the window of the next one.
                self._spare = (etcd_lease, ttl)
            return None
        return V3Lease(subnet, attrs, etcd_lease, revision, self, ttl=ttl or None, created_index=revision,
                       ipv6_subnet=ipv6_subnet)

    @counted("update_lease")
    def update_lease(self, lease, attrs, ttl):
        """An unchanged value with the same TTL only has its etcd lease kept alive, which wakes no
        watcher; another value or TTL is a new etcd lease put in one transaction."""
        key = self.key_of(lease)
        etcd_lease = getattr(lease, "etcd_lease", 0)
        if attrs == lease.attrs and ttl and etcd_lease and self._granted_ttl(etcd_lease) == ttl:
            remaining = self._keepalive(etcd_lease)
            kvs = self._range(key)[0] if remaining else []
            if not kvs or int(kvs[0].get("mod_revision", 0)) != lease.modified_index:
                return None
            return V3Lease(lease.subnet, attrs, etcd_lease, lease.modified_index, self, ttl=remaining,
                           created_index=lease.created_index, ipv6_subnet=lease.ipv6_subnet)
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
                       created_index=lease.created_index, ipv6_subnet=lease.ipv6_subnet)

    @counted("delete_lease")
    def delete_lease(self, lease):
        key = self.key_of(lease)
        deleted = self._txn(self._compare(key, "MOD", lease.modified_index),
                            [{"request_delete_range": {"key": _b64(key)}}])[0]
        if deleted and getattr(lease, "etcd_lease", 0):
            self._revoke(lease.etcd_lease)
        return deleted

    # ---- public IP claims ------------------------------------------------------------------

    @counted("claim_public_ip")
    def claim_public_ip(self, public_ip, host_id, ttl):
        """Ours is kept alive (its etcd lease), another host's named."""
        key = self.host_claim_key(public_ip)
        value = claim_value(host_id)
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
                return claim_holder(_unb64(kv.get("value")), key)
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
        that history away, or answers as another cluster than the listing's or below that revision.
        """
        watched = (self.prefix if with_config else self.subnets_key) + "/"
        stream = self._watch
        if stream is None or stream.dead or stream.watched != watched or stream.position != after_index:
            self.close()
            stream = self._watch = self._gateway.open_watch(watched, after_index + 1, self._cluster_id)
        try:
            event = stream.next_event(timeout)
        except RegistryUnavailable:
            self.close()  # e.g. etcd restarted: resume where the stream stopped
            stream = self._watch = self._gateway.open_watch(watched, after_index + 1, self._cluster_id)
            event = stream.next_event(timeout)
        self._cluster_id = stream.cluster_id
        if event is None:
            return [], after_index, None
        kv = event.get("kv") or {}
        next_index = stream.position = int(kv.get("mod_revision", 0) or 0)
        return self._change(_unb64(kv.get("key")), event.get("type") == "DELETE", kv, next_index, config)
