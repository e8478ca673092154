"""What every registry shares: flannel's keys, the operations the agent and the modules use, and
what a listing or a watched change means (events, skipped keys), decided here once for both APIs.

A registry (v2.py on python-etcd, v3.py on etcd's JSON gateway) reads and writes etcd; this
module imports neither client library.
"""

import json
from urllib.parse import urlsplit

from .. import metrics
from ..etcd_http import RequestGate
from ..lease import is_leasable_key, parse_lease_key, subnet_key
from .errors import ConfigMissing, IndexCleared, RegistryBadReply, RegistryError, RegistryUnavailable, _root_cause

DEFAULT_PREFIX = "/coreos.com/network"
DEFAULT_ENDPOINTS = ("http://127.0.0.1:2379",)


def counted(operation):
    """Count calls of a registry operation, and those that failed (etcd unreachable, refusing us, or
    answering an error), in the agent's metrics. Answers about keys are not failures."""
    return metrics.etcd_operation(operation, RegistryError, (ConfigMissing, IndexCleared))


class LeaseListing:
    """The valid leases, etcd's index at the time of the listing, what was skipped
    ([(key, reason)]), and the subnets of every key named like a lease, valid or not (`taken`:
    a key with a bad value still stops another host from creating that key; `taken_ipv6`: the
    IPv6 subnets of the dual-stack ones). `outheld`: [(lease, reason)] of the valid leases skipped
    because another key holds their IPv4 or IPv6 subnet (their host acquires again)."""

    def __init__(self, leases, index, skipped, taken=None, taken_ipv6=None, outheld=()):
        self.leases = leases
        self.index = index
        self.skipped = skipped
        self.outheld = list(outheld)
        self.taken = taken if taken is not None else [lease.subnet for lease in leases]
        self.taken_ipv6 = taken_ipv6 if taken_ipv6 is not None else [
            lease.ipv6_subnet for lease in leases if lease.ipv6_subnet is not None]


class LeaseEvent:
    """A change under <prefix>/subnets: `lease` is None for a removal; `key` is the etcd key
    changed (None when not known): on a dual-stack network two keys can name one IPv4 subnet."""

    def __init__(self, subnet, lease, key=None):
        self.subnet = subnet
        self.lease = lease
        self.key = key

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


class ConfigEvent:
    """A change of <prefix>/config: `text` is the stored value, None when the key went away."""

    subnet = None

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return "ConfigEvent(%r)" % (self.text if self.text is None else self.text[:80])


def subnets_of_key(key, subnets_key):
    """(IPv4 subnet, IPv6 subnet or None) named by a key directly under `subnets_key`; ValueError
    otherwise (a key nested deeper, inside a directory, names no lease even when its last part
    looks like one)."""
    if str(key).rsplit("/", 1)[0] != subnets_key:
        raise ValueError("not a subnet lease key: %r is not directly under %s" % (str(key)[:200], subnets_key))
    return parse_lease_key(key)


def names_another_key(event, known):
    """Whether a LeaseEvent changed another key than the one of `known`, the lease held for its
    subnet (None: none held): then two keys name that subnet (a host re-keying its lease for IPv6,
    or upstream v0.10 writing its own key beside a dual-stack one) and only a listing can say which
    one holds it (LeaseListing's rule, in Registry._listing)."""
    return (known is not None and getattr(event, "key", None) is not None
            and event.key.rsplit("/", 1)[-1] != known.key)


def _holder(leases):
    """Of the leases naming one subnet, the one that holds it: the earliest created key's host
    holds it (a later key beside it cannot take it over), and among that host's keys (same
    PublicIP) the last written one is its current lease."""
    first = min(leases, key=lambda lease: lease.created_index)
    own = [lease for lease in leases if lease.attrs.public_ip == first.attrs.public_ip]
    return max(own, key=lambda lease: lease.modified_index)


def _settle_shared_subnets(leases):
    """(holders, outheld): of leases naming one subnet, IPv4 or IPv6, only the holder stays. Two
    dual-stack keys can name one IPv6 subnet (or one IPv4 subnet) where a create at one key stops
    only another create at that same key: hosts acquiring at once settle it here, the same way on
    every host, and the later one acquires again."""
    outheld = []
    for family, subnet_of in (("", lambda lease: lease.subnet), ("IPv6 ", lambda lease: lease.ipv6_subnet)):
        by_subnet = {}
        for lease in leases:
            if subnet_of(lease) is not None:
                by_subnet.setdefault(subnet_of(lease), []).append(lease)
        for subnet, named in by_subnet.items():
            if len(named) > 1:
                holder = _holder(named)
                why = "%ssubnet %s is also leased at %s, which holds it" % (family, subnet, holder.key)
                outheld.extend((lease, why) for lease in named if lease is not holder)
                leases = [lease for lease in leases if lease is holder or subnet_of(lease) != subnet]
    return leases, outheld


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


def claim_value(host_id):
    """What a public IP claim holds: the id of the host that holds it, as compact JSON."""
    return json.dumps({"HostID": host_id}, separators=(",", ":"))


def claim_holder(text, key):
    """The host id a claim's stored `text` names (the claim at `key`, another host's)."""
    try:
        return str(json.loads(text).get("HostID", "unknown"))
    except (TypeError, ValueError, AttributeError):
        return "unknown (unreadable claim at %s)" % key


class Registry:
    """flannel's registry on etcd: the keys, and the operations below, which each API's subclass
    implements. Every lease write is conditional (created only if absent, changed or deleted only
    as it was read), so two hosts can never silently overwrite each other's lease (upstream #1289).

    A subclass reads etcd's nodes (a v2 node, a v3 key-value) through _lease_from_node and
    _config_text; what they mean is decided here."""

    api = None

    def __init__(self, prefix=DEFAULT_PREFIX, timeout=5.0):
        self.prefix = "/" + prefix.strip("/")
        self.timeout = timeout
        # Every reply is read within etcd_http's limits, and SIGTERM can end the request it waits in.
        self.gate = RequestGate()
        self.onlink_prefixes = None  # callable: this host's on-link prefixes, for checked_lease (the agent's)

    def onlink(self):
        """This host's on-link prefixes, which a lease's PublicIP must not be the network or
        broadcast address of; none when no one said (the modules)."""
        return self.onlink_prefixes() if self.onlink_prefixes else ()

    def close(self):
        """Let go of what stays open between requests (the v3 registry's watch stream)."""

    @property
    def config_key(self):
        return self.prefix + "/config"

    @property
    def subnets_key(self):
        return self.prefix + "/subnets"

    def lease_key(self, subnet, ipv6_subnet=None):
        return "%s/%s" % (self.subnets_key, subnet_key(subnet, ipv6_subnet))

    def key_of(self, lease):
        """The etcd key of a lease (its IPv6 subnet named too on a dual-stack lease)."""
        return "%s/%s" % (self.subnets_key, lease.key)

    def host_claim_key(self, public_ip):
        """Ours: flanneld ignores keys outside config and subnets."""
        return "%s/netlab-hosts/%s" % (self.prefix, public_ip)

    # ---- the operations, each API's ---------------------------------------------------------

    def get_config(self):
        """The raw config text; ConfigMissing when the key does not exist."""
        raise NotImplementedError

    def put_config(self, text):
        raise NotImplementedError

    def list_leases(self, config=None):
        """Every lease under subnets/, checked (against `config` when given): a LeaseListing."""
        raise NotImplementedError

    def get_lease(self, subnet):
        """The lease for a subnet, or None."""
        raise NotImplementedError

    def create_lease(self, subnet, attrs, ttl):
        """Create a lease only if the key is free; None when another host got there first."""
        raise NotImplementedError

    def update_lease(self, lease, attrs, ttl):
        """Rewrite a lease if it is unchanged since it was read; None when it changed or vanished.
        An unchanged value only has its TTL refreshed, which wakes no watcher."""
        raise NotImplementedError

    def delete_lease(self, lease):
        """Delete a lease if it is unchanged since it was read; False when it changed or vanished."""
        raise NotImplementedError

    def claim_public_ip(self, public_ip, host_id, ttl):
        """Hold <prefix>/netlab-hosts/<ip> for `host_id` for `ttl` s; refresh it when already ours.

        Returns None when held, else the id of the live host that holds it: two hosts with one
        public IP would otherwise share one lease (upstream #51, #98).
        """
        raise NotImplementedError

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
        raise NotImplementedError

    # ---- what etcd's nodes mean, for both APIs ----------------------------------------------

    def _lease_from_node(self, node, config=None, subnets=None):
        """The checked lease of an etcd node; ValueError says why it is not one. With `config`,
        also the checks that need it (see lease.checked_lease). `subnets`: what subnets_of_key
        already read from the node's key (read here when None)."""
        raise NotImplementedError

    def _config_text(self, node):
        """The text a node of the config key holds."""
        raise NotImplementedError

    def _is_directory(self, node):
        return False

    def _listing(self, listed, index, config):
        """The LeaseListing of (key, node) pairs read under subnets/ at `index`."""
        leases, skipped, taken, taken_ipv6 = [], [], [], []
        for key, node in listed:
            try:
                subnets = subnet, ipv6_subnet = subnets_of_key(key, self.subnets_key)
                taken.append(subnet)
                if ipv6_subnet is not None:
                    taken_ipv6.append(ipv6_subnet)
                if self._is_directory(node):  # it stops a create at its key as any other value does
                    raise ValueError("a directory, not a lease")
                leases.append(self._lease_from_node(node, config, subnets))
            except ValueError as err:
                skipped.append((key, str(err)))
        leases, outheld = _settle_shared_subnets(leases)
        skipped.extend((self.key_of(lease), why) for lease, why in outheld)
        return LeaseListing(leases, index, skipped, taken, taken_ipv6, outheld)

    def _change(self, key, removed, node, next_index, config):
        """What a watched change of `key` (to `node`, or `removed`) means, as watch_leases returns it."""
        if key == self.config_key:
            return [ConfigEvent(None if removed else self._config_text(node))], next_index, None
        if not key.startswith(self.subnets_key + "/"):
            return [], next_index, None  # public IP claims
        try:
            subnets = subnets_of_key(key, self.subnets_key)
        except ValueError as err:
            if removed:
                return [UnreadableKeyRemoved(key)], next_index, None
            return [], next_index, (key, str(err))
        subnet = subnets[0]
        if removed:
            return [LeaseEvent(subnet, None, key)], next_index, None
        try:
            lease = self._lease_from_node(node, config, subnets)
        except ValueError as err:
            gone = [LeaseEvent(subnet, None, key)] if config is None or is_leasable_key(subnet, config) else []
            return gone, next_index, (key, str(err))
        return [LeaseEvent(lease.subnet, lease, key)], next_index, None
