"""etcd v2 access in flannel's layout: <prefix>/config and <prefix>/subnets/A.B.C.D-LEN.

With registry_v3.py (the same interface on etcd's v3 API, chosen by make_registry) the only code
that talks to etcd: the agent and the modules use them (the action plugin reaches etcd through
the modules).
Every lease write is conditional (prevExist=false to create, prevIndex to change or delete),
so two hosts can never silently overwrite each other's lease (upstream #1289).
"""

import json

from urllib.parse import urlsplit

try:
    import etcd
except ImportError:  # reported by the caller through missing_libraries()
    etcd = None

from . import metrics
from .etcd_http import BadReply, BoundedHTTP, RequestGate, checked_v2_node, checked_v2_nodes, excerpt
# What the registries raise, for their callers: from here as ever.
from .registry_errors import (ConfigMissing, IndexCleared, RegistryAuthError, RegistryBadReply, RegistryError,
                              RegistryUnavailable, _root_cause)
from .lease import Lease, LeaseAttrs, checked_lease, is_leasable_key, parse_subnet_key, subnet_key

DEFAULT_PREFIX = "/coreos.com/network"
DEFAULT_ENDPOINTS = ("http://127.0.0.1:2379",)
# The etcd APIs a registry speaks: v2 (flanneld v0.10's, the default) and v3 (registry_v3.py).
ETCD_APIS = ("v2", "v3")
_REMOVAL_ACTIONS = ("delete", "expire", "compareAndDelete")
# python-etcd 0.4.5's messages for a 200 whose body it could not make a result of, and what they mean.
_UNDECODABLE = {"Server response was not valid JSON": "not JSON",
                "Unable to decode server response": "wrong shape: not an etcd v2 reply"}


def counted(operation):
    """Count calls of a registry operation, and those that failed (etcd unreachable, refusing us, or
    answering an error), in the agent's metrics. Answers about keys are not failures."""
    return metrics.etcd_operation(operation, RegistryError, (ConfigMissing, IndexCleared))


class LeaseListing:
    """The valid leases, etcd's index at the time of the listing, what was skipped
    ([(key, reason)]), and the subnets of every key named like a lease, valid or not (`taken`:
    a key with a bad value still stops another host from creating that key)."""

    def __init__(self, leases, index, skipped, taken=None):
        self.leases = leases
        self.index = index
        self.skipped = skipped
        self.taken = taken if taken is not None else [lease.subnet for lease in leases]


class LeaseEvent:
    """A change under <prefix>/subnets: `lease` is None for a removal."""

    def __init__(self, subnet, lease):
        self.subnet = subnet
        self.lease = lease

    @property
    def removed(self):
        return self.lease is None

    def __repr__(self):
        return "LeaseEvent(%s, %s)" % (self.subnet, "removed" if self.removed else self.lease.attrs)


class UnreadableKeyRemoved:
    """A key under <prefix>/subnets that was not named like a lease went away (it had been skipped)."""

    subnet = None

    def __init__(self, key):
        self.key = key

    def __repr__(self):
        return "UnreadableKeyRemoved(%r)" % self.key


def subnet_of_key(key, subnets_key):
    """The subnet named by a key directly under `subnets_key`; ValueError otherwise (a key nested
    deeper, inside a directory, names no lease even when its last part looks like one)."""
    if str(key).rsplit("/", 1)[0] != subnets_key:
        raise ValueError("not a subnet lease key: %r is not directly under %s" % (str(key)[:200], subnets_key))
    return parse_subnet_key(key)


class ConfigEvent:
    """A change of <prefix>/config: `text` is the stored value, None when the key went away."""

    subnet = None

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return "ConfigEvent(%r)" % (self.text if self.text is None else self.text[:80])


def unanswered(endpoints, last_error, bad_reply=None):
    """The error once every endpoint failed: a bad reply if any (it says more than a refusal)."""
    if bad_reply is not None:
        return RegistryBadReply(str(bad_reply))
    return RegistryUnavailable("no etcd endpoint answered (%s): %s" % (", ".join(endpoints), _root_cause(last_error)))


def parse_endpoints(endpoints):
    """'http://a:2379,https://b:2379' or a list -> [(scheme, host, port)]; ValueError on a bad one."""
    if isinstance(endpoints, str):
        endpoints = [item for item in endpoints.split(",") if item.strip()]
    parsed = []
    for endpoint in endpoints:
        parts = urlsplit(endpoint.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("etcd endpoint %r must look like http://HOST:PORT or https://HOST:PORT"
                             % endpoint)
        try:
            port = parts.port or 2379
        except ValueError:
            raise ValueError("etcd endpoint %r has an invalid port" % endpoint)
        parsed.append((parts.scheme, parts.hostname, port))
    if not parsed:
        raise ValueError("at least one etcd endpoint is required")
    return parsed


def make_registry(api="v2", **options):
    """The registry of etcd API `api` (v2 or v3), built from EtcdRegistry's keyword options."""
    if api == "v3":
        from .registry_v3 import EtcdV3Registry

        return EtcdV3Registry(**options)
    if api != "v2":
        raise ValueError("etcd API %r must be one of %s" % (api, ", ".join(ETCD_APIS)))
    return EtcdRegistry(**options)


class EtcdRegistry:
    """flannel's registry on an etcd v2 cluster, failing over between endpoints."""

    api = "v2"

    def __init__(self, endpoints=DEFAULT_ENDPOINTS, prefix=DEFAULT_PREFIX, ca_file=None, cert_file=None,
                 key_file=None, username=None, password=None, timeout=5.0):
        self.prefix = "/" + prefix.strip("/")
        self.timeout = timeout
        cert = (cert_file, key_file) if cert_file and key_file else cert_file or None
        # One client per endpoint without python-etcd's own reconnect, which queries the
        # cluster while constructing and so cannot start while etcd is down.
        self._clients = [etcd.Client(host=host, port=port, protocol=scheme, cert=cert, ca_cert=ca_file,
                                     username=username, password=password, read_timeout=timeout,
                                     allow_reconnect=False)
                         for scheme, host, port in parse_endpoints(endpoints)]
        # Every reply python-etcd asks for is read within etcd_http's limits, and SIGTERM can end it.
        self.gate = RequestGate()
        for client in self._clients:
            client.http = BoundedHTTP(client.http, self.gate)
        self._current = 0
        self.onlink_prefixes = None  # callable: this host's on-link prefixes, for checked_lease (the agent's)

    def onlink(self):
        """This host's on-link prefixes, which a lease's PublicIP must not be the network or
        broadcast address of; none when no one said (the modules)."""
        return self.onlink_prefixes() if self.onlink_prefixes else ()

    def close(self):
        """Nothing stays open between v2 requests (the v3 registry keeps a watch stream)."""

    @property
    def config_key(self):
        return self.prefix + "/config"

    @property
    def subnets_key(self):
        return self.prefix + "/subnets"

    def lease_key(self, subnet):
        return "%s/%s" % (self.subnets_key, subnet_key(subnet))

    def _call(self, operation):
        """Run operation(client), moving to the next endpoint when one cannot be reached."""
        last_error = bad_reply = None
        for _attempt in range(len(self._clients)):
            client = self._clients[self._current]
            try:
                result = operation(client)
                return checked_v2_node(result, client.base_uri) if isinstance(result, etcd.EtcdResult) else result
            except etcd.EtcdWatchTimedOut:
                raise
            except (etcd.EtcdKeyNotFound, etcd.EtcdAlreadyExist, etcd.EtcdCompareFailed,
                    etcd.EtcdEventIndexCleared):
                raise  # answers about the keys, which the callers handle
            except etcd.EtcdInsufficientPermissions as err:
                raise RegistryAuthError("etcd at %s refused access to %s: %s (check -etcd-username and "
                                        "-etcd-password, and the user's role)"
                                        % (client.base_uri, self.prefix, _root_cause(err)))
            except (etcd.EtcdKeyError, etcd.EtcdValueError) as err:
                # e.g. <prefix>/subnets written as a plain key: only an operator can fix that.
                raise RegistryError("etcd refused an operation under %s: %s" % (self.prefix, excerpt(err)))
            except etcd.EtcdException as err:
                # Anything else (unreachable, a leader election) is etcd not serving now; a reply
                # over the limits is the cause of a failed request, an undecodable one is said so.
                cause = getattr(err, "cause", None)
                last_error = cause if isinstance(cause, BadReply) else err
                for said, problem in _UNDECODABLE.items():
                    if str(err).startswith(said):
                        last_error = BadReply(client.base_uri, problem)
            except BadReply as err:  # a node of the wrong shape
                last_error = err
            except (TypeError, AttributeError, KeyError, RecursionError):  # python-etcd choking on one
                last_error = BadReply(client.base_uri, "wrong shape: not an etcd v2 reply")
            if isinstance(last_error, BadReply):
                bad_reply = last_error
            self._current = (self._current + 1) % len(self._clients)
        raise unanswered([c.base_uri for c in self._clients], last_error, bad_reply)

    # ---- network config -------------------------------------------------------------------

    @counted("get_config")
    def get_config(self):
        """The raw config text; ConfigMissing when the key does not exist."""
        try:
            return self._call(lambda c: c.read(self.config_key, quorum=True)).value
        except etcd.EtcdKeyNotFound:
            raise ConfigMissing("%s does not exist in etcd (written with the v3 API? flannel reads v2)"
                                % self.config_key)

    @counted("put_config")
    def put_config(self, text):
        self._call(lambda c: c.write(self.config_key, text))

    # ---- leases ---------------------------------------------------------------------------

    def _lease_from_node(self, node, config=None):
        """The checked lease of an etcd node; ValueError says why it is not one. With `config`,
        also the checks that need it (see lease.checked_lease)."""
        subnet = subnet_of_key(node.key, self.subnets_key)
        attrs = LeaseAttrs.from_json(node.value)
        return checked_lease(Lease(subnet, attrs, ttl=node.ttl, modified_index=node.modifiedIndex,
                                   created_index=node.createdIndex or 0), config, self.onlink())

    @counted("list_leases")
    def list_leases(self, config=None):
        """Every lease under subnets/, checked (against `config` when given)."""
        try:
            result = self._call(lambda c: c.read(self.subnets_key, recursive=True, quorum=True))
            nodes = checked_v2_nodes(result, self._clients[self._current].base_uri)
        except etcd.EtcdKeyNotFound as err:
            index = (err.payload or {}).get("index", 0) if isinstance(err.payload, (dict, type(None))) else None
            if isinstance(index, int) and not isinstance(index, bool):
                return LeaseListing([], index, [], [])
            raise RegistryBadReply("etcd reply from %s: wrong shape: error index %s"
                                   % (self._clients[self._current].base_uri, excerpt(repr(index), 60)))
        except BadReply as err:
            raise RegistryBadReply(str(err))
        leases, skipped, taken = [], [], []
        for node in nodes:
            if node.key == self.subnets_key or node.key.rsplit("/", 1)[0] != self.subnets_key:
                continue  # the listing itself, or what a directory below it holds (the directory is named)
            try:
                taken.append(subnet_of_key(node.key, self.subnets_key))
                if node.dir:  # it stops a create at its key as any other value does
                    raise ValueError("a directory, not a lease")
                leases.append(self._lease_from_node(node, config))
            except ValueError as err:
                skipped.append((node.key, str(err)))
        return LeaseListing(leases, result.etcd_index, skipped, taken)

    @counted("get_lease")
    def get_lease(self, subnet):
        """The lease for a subnet, or None."""
        try:
            return self._lease_from_node(self._call(lambda c: c.read(self.lease_key(subnet), quorum=True)))
        except etcd.EtcdKeyNotFound:
            return None

    @counted("create_lease")
    def create_lease(self, subnet, attrs, ttl):
        """Create a lease only if the key is free; None when another host got there first."""
        try:
            node = self._call(lambda c: c.write(self.lease_key(subnet), attrs.to_json(), ttl=ttl or None,
                                                prevExist=False))
        except etcd.EtcdAlreadyExist:
            return None
        return self._lease_from_node(node)

    @counted("update_lease")
    def update_lease(self, lease, attrs, ttl):
        """Rewrite a lease if it is unchanged since it was read; None when it changed or vanished.

        An unchanged value only has its TTL refreshed, which wakes no watcher.
        """
        key = self.lease_key(lease.subnet)
        try:
            if attrs == lease.attrs and ttl and not lease.is_reservation:
                node = self._call(lambda c: c.refresh(key, ttl, prevIndex=lease.modified_index))
                return Lease(lease.subnet, attrs, ttl=node.ttl, modified_index=node.modifiedIndex,
                             created_index=lease.created_index)
            node = self._call(lambda c: c.write(key, attrs.to_json(), ttl=ttl or None,
                                                prevIndex=lease.modified_index))
        except (etcd.EtcdCompareFailed, etcd.EtcdKeyNotFound):
            return None
        return self._lease_from_node(node)

    @counted("delete_lease")
    def delete_lease(self, lease):
        """Delete a lease if it is unchanged since it was read; False when it changed or vanished."""
        try:
            self._call(lambda c: c.delete(self.lease_key(lease.subnet), prevIndex=lease.modified_index))
        except (etcd.EtcdCompareFailed, etcd.EtcdKeyNotFound):
            return False
        return True

    # ---- public IP claims (ours; flanneld ignores keys outside config and subnets) --------

    def host_claim_key(self, public_ip):
        return "%s/netlab-hosts/%s" % (self.prefix, public_ip)

    @counted("claim_public_ip")
    def claim_public_ip(self, public_ip, host_id, ttl):
        """Hold <prefix>/netlab-hosts/<ip> for `host_id` for `ttl` s; refresh it when already ours.

        Returns None when held, else the id of the live host that holds it: two hosts with one
        public IP would otherwise share one lease (upstream #51, #98).
        """
        key = self.host_claim_key(public_ip)
        value = json.dumps({"HostID": host_id}, separators=(",", ":"))
        for _attempt in range(3):
            try:
                self._call(lambda c: c.write(key, value, ttl=ttl, prevExist=False))
                return None
            except etcd.EtcdAlreadyExist:
                pass
            try:
                # A refresh wakes no watcher: agents watching the whole prefix sleep through it.
                self._call(lambda c: c.refresh(key, ttl, prevValue=value))
                return None
            except etcd.EtcdCompareFailed:
                try:
                    holder = json.loads(self._call(lambda c: c.read(key, quorum=True)).value)
                    return str(holder.get("HostID", "unknown"))
                except etcd.EtcdKeyNotFound:
                    continue
                except (TypeError, ValueError, AttributeError):
                    return "unknown (unreadable claim at %s)" % key
            except etcd.EtcdKeyNotFound:
                continue
        raise RegistryError("could not claim %s: it changed three times in a row" % key)

    @counted("watch_leases")
    def watch_leases(self, after_index, timeout, config=None, with_config=False):
        """Wait up to `timeout` s for the next change after `after_index`.

        Returns (events, next_index, skipped): at most one event; `skipped` is (key, reason) for
        a change that is not a valid lease (the watch moves past it instead of stalling, upstream
        PR #1368). A lease key that could hold a lease under `config` but was given a bad value
        also yields a removal: what it held before can no longer be trusted.
        With `with_config`, the whole prefix is watched and a change of the network config is a
        ConfigEvent (one watch, so config and lease changes arrive in etcd's order); changes of
        other keys under the prefix (public IP claims) move the index on, with no event.
        Raises IndexCleared when etcd no longer has that history.
        """
        watched = self.prefix if with_config else self.subnets_key
        try:
            node = self._call(lambda c: c.read(watched, wait=True, recursive=True,
                                               waitIndex=after_index + 1, timeout=timeout))
        except etcd.EtcdWatchTimedOut:
            return [], after_index, None
        except etcd.EtcdEventIndexCleared:
            raise IndexCleared("etcd's event history no longer reaches index %d" % (after_index + 1))
        except etcd.EtcdKeyNotFound:
            raise IndexCleared("%s is missing" % watched)
        next_index = node.modifiedIndex
        if node.key in (self.subnets_key, watched):
            raise IndexCleared("%s itself changed (%s)" % (node.key, node.action))
        if node.key == self.config_key:
            removed = node.action in _REMOVAL_ACTIONS
            return [ConfigEvent(None if removed else node.value)], next_index, None
        if not node.key.startswith(self.subnets_key + "/"):
            return [], next_index, None
        try:
            subnet = subnet_of_key(node.key, self.subnets_key)
        except ValueError as err:
            if node.action in _REMOVAL_ACTIONS:
                return [UnreadableKeyRemoved(node.key)], next_index, None
            return [], next_index, (node.key, str(err))
        if node.action in _REMOVAL_ACTIONS:
            return [LeaseEvent(subnet, None)], next_index, None
        try:
            lease = self._lease_from_node(node, config)
        except ValueError as err:
            removed = [LeaseEvent(subnet, None)] if config is None or is_leasable_key(subnet, config) else []
            return removed, next_index, (node.key, str(err))
        return [LeaseEvent(lease.subnet, lease)], next_index, None
