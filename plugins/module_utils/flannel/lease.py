"""Subnet leases: flannel's key and JSON formats, and the acquisition policy.

A lease lives at <prefix>/subnets/A.B.C.D-LEN (on a dual-stack network
A.B.C.D-LEN&<IPv6>-LEN, as modern flanneld names it) with the JSON value flanneld writes
(lease_attrs.py), so upstream flanneld and this agent can share one registry.
"""

import random
import re

# The value's format and checks, this module's API too (registries, backends, cli and tests import them from here).
from .lease_attrs import (KNOWN_BACKEND_TYPES, MAX_LEASE_BYTES, MAX_LEASE_DEPTH, LeaseAttrs, ipv4_unicast_problem,
                          ipv6_unicast_problem, parsed_address, strict_json_loads, unicast_mac_problem)

try:
    from netaddr import IPAddress, IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    IPAddress = IPNetwork = None

__all__ = ["KNOWN_BACKEND_TYPES", "MAX_LEASE_BYTES", "MAX_LEASE_DEPTH", "LeaseAttrs", "ipv4_unicast_problem",
           "ipv6_unicast_problem", "strict_json_loads", "unicast_mac_problem"]

LEASE_TTL = 24 * 3600
MAX_CANDIDATES = 100
RACE_RETRIES = 10
# The lease fields that identify a peer's entries (peer_identity.py; metrics labels by them).
VTEP_MAC = "VtepMAC"
PUBLIC_IP = "PublicIP"
PUBLIC_KEY = "PublicKey"
IPV6_SUBNET = "IPv6Subnet"  # the IPv6 subnet a dual-stack key names (a lease value has no such field)
IDENTITY_KINDS = (VTEP_MAC, PUBLIC_IP, PUBLIC_KEY, IPV6_SUBNET)
# flannel's key: A.B.C.D-LEN, and on a dual-stack network &<IPv6 as Go prints it>-LEN after it.
_KEY_PATTERN = re.compile(r"^(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([0-9a-f:]+)-(\d+))?$")


class LeaseError(Exception):
    """Acquisition failed for a reason retrying right away cannot fix."""


class OutOfSubnets(LeaseError):
    """Every subnet in range has a key. `unreadable`: how many of those keys hold no valid lease
    (junk, a directory, a lease the config refuses). They are left alone, never taken over: a
    value this agent cannot read may be another tool's or a newer flannel's, so the message counts
    them for the operator, who can delete them."""

    def __init__(self, config, unreadable=0):
        space = "every /%d between %s and %s" % (config.subnet_len, config.subnet_min, config.subnet_max)
        if unreadable:
            super().__init__("no free subnet: %s has a key; %d keys in range hold no valid lease (delete them to free "
                             "their subnets)" % (space, unreadable))
        else:
            super().__init__("no free subnet: %s is leased" % space)
        self.unreadable = unreadable


def subnet_key(subnet, ipv6_subnet=None):
    """flannel's key for a subnet: 10.5.34.0/24 -> '10.5.34.0-24', and with an IPv6 subnet
    fd00:10:0:1::/64 -> '10.5.34.0-24&fd00:10:0:1::-64'."""
    key = "%s-%d" % (subnet.ip, subnet.prefixlen)
    return key if ipv6_subnet is None else "%s&%s-%d" % (key, ipv6_subnet.ip, ipv6_subnet.prefixlen)


def cidr(subnet):
    """`subnet` (an IPNetwork, or its text) as an IPNetwork without host bits. A lease's subnet
    already is one (the registries parse keys so) and is used as it is: copying it through its
    text at each use cost CPU at every lease event."""
    if isinstance(subnet, IPNetwork) and subnet.value == subnet.first:
        return subnet
    return IPNetwork(str(subnet)).cidr


def _not_a_key(key):
    return ValueError("not a subnet lease key (A.B.C.D-LEN or A.B.C.D-LEN&IPv6-LEN): %r" % key)


def parse_lease_key(key):
    """(IPv4 subnet, IPv6 subnet or None) named by a lease key (its last path element);
    ValueError when it is not one.

    Only flannel's own spelling is a key: no host bits, no leading zeros, IPv6 as Go prints it
    (lower case, zeros compressed). Another spelling of a subnet would be read from one key and
    updated or deleted at another.
    """
    name = str(key).rsplit("/", 1)[-1]
    match = _KEY_PATTERN.match(name)
    if not match or int(match.group(2)) > 32 or (match.group(4) is not None and int(match.group(4)) > 128):
        raise _not_a_key(key)
    try:
        subnet = IPNetwork("%s/%s" % match.group(1, 2), flags=0).cidr
        ipv6_subnet = IPNetwork("%s/%s" % match.group(3, 4), 6, flags=0).cidr if match.group(3) else None
    except Exception:
        raise _not_a_key(key)
    canonical = subnet_key(subnet, ipv6_subnet)
    if canonical != name:
        raise ValueError("not a subnet lease key: %r is not written as flannel writes %s" % (key, canonical))
    return subnet, ipv6_subnet


def parse_subnet_key(key):
    """The IPv4 subnet named by a lease key (see parse_lease_key); ValueError when it is not one."""
    return parse_lease_key(key)[0]


def onlink_address_problem(address, prefixes):
    """Why `address` cannot be a host on one of `prefixes` (IPNetworks with the host's own address,
    as netlink.local_ipv4_prefixes gives them), or None: the network and broadcast addresses of an
    on-link prefix reach every host there or none. /31 and /32 have neither (RFC 3021)."""
    address = IPAddress(address)
    for prefix in sorted(prefixes or ()):
        if prefix.version != 4 or prefix.prefixlen >= 31 or address not in prefix:
            continue
        if address == prefix.network:
            return "%s is the network address of the on-link prefix %s" % (address, prefix.cidr)
        if address == prefix.broadcast:
            return "%s is the broadcast address of the on-link prefix %s" % (address, prefix.cidr)
    return None


class Lease:
    """A subnet held by a host. `ttl` is the seconds left as etcd reported them (None: no TTL).
    `created_index`: etcd's index when the key was created (kept by updates), which orders the
    claims of leases sharing an identity (peer_identity.py). `ipv6_subnet`: the IPv6 subnet a
    dual-stack lease's key names too (None on an IPv4-only lease); `subnet` stays the lease's name
    everywhere else (events, peers), as upstream v0.10 knows it."""

    def __init__(self, subnet, attrs, ttl=None, modified_index=0, created_index=0, ipv6_subnet=None):
        self.subnet = subnet
        self.ipv6_subnet = ipv6_subnet
        self.attrs = attrs
        self.ttl = ttl
        self.modified_index = modified_index
        self.created_index = created_index

    @property
    def key(self):
        return subnet_key(self.subnet, self.ipv6_subnet)

    @property
    def is_reservation(self):
        """A lease without TTL, written by an operator: kept forever, never renewed."""
        return self.ttl is None

    def __repr__(self):
        return "Lease(%s, %r, ttl=%r, index=%r)" % (self.key, self.attrs, self.ttl, self.modified_index)


def lease_problem(lease, config, onlink=()):
    """Why a parsed lease cannot be used under `config`, or None: its key must be a subnet of
    the Network with the configured SubnetLen, and its PublicIP outside the overlay and neither
    the network nor the broadcast address of a prefix this host is on (`onlink`)."""
    public_ip = parsed_address(lease.attrs.public_ip)  # parsed once for the checks below
    problem = onlink_address_problem(public_ip, onlink)
    if problem:
        return "PublicIP %s" % problem
    if config is None:
        return None
    subnet = lease.subnet
    if subnet.prefixlen != config.subnet_len or subnet not in config.network:
        return ("subnet %s is not a /%d inside the Network %s"
                % (subnet, config.subnet_len, config.network))
    if public_ip in config.network:
        return "PublicIP %s is inside the overlay network %s" % (lease.attrs.public_ip, config.network)
    return _ipv6_problem(lease, config.ipv6)


def _ipv6_problem(lease, ipv6):
    """The IPv6 side of lease_problem: with IPv6 off (`ipv6` None) a dual-stack lease's IPv6 part
    is not used, so not checked; an IPv4-only lease is a peer without IPv6 (upstream v0.10's)."""
    if ipv6 is None:
        return None
    subnet = lease.ipv6_subnet
    if subnet is not None and (subnet.prefixlen != ipv6.subnet_len or subnet not in ipv6.network):
        return "IPv6 subnet %s is not a /%d inside the IPv6Network %s" % (subnet, ipv6.subnet_len, ipv6.network)
    public_ipv6 = lease.attrs.public_ipv6
    if public_ipv6 is not None and IPAddress(public_ipv6) in ipv6.network:
        return "PublicIPv6 %s is inside the overlay IPv6 network %s" % (public_ipv6, ipv6.network)
    return None


def checked_lease(lease, config=None, onlink=()):
    """`lease` itself when it is usable under `config` (no check without one) and on this host's
    on-link prefixes `onlink`; ValueError says why not. The registries call it on every lease
    they read."""
    problem = lease_problem(lease, config, onlink)
    if problem:
        raise ValueError(problem)
    return lease


def is_leasable_key(subnet, config):
    """Whether a key's subnet can be a lease under `config` (inside the Network, SubnetLen)."""
    return subnet.prefixlen == config.subnet_len and subnet in config.network


def free_subnets(config, taken, limit=MAX_CANDIDATES):
    """The first `limit` subnets of the config's range that no key holds, in address order.

    `taken` holds leases or subnets. Keys that cannot be leases under this config (another
    length, outside the Network) are ignored: they block no candidate's key, and a junk key
    covering the whole space must not exhaust it.
    """
    subnets = (item.subnet if isinstance(item, Lease) else item for item in taken)
    taken = sorted((subnet.first, subnet.last) for subnet in subnets if is_leasable_key(subnet, config))
    free = []
    position = 0
    for candidate in config.candidate_subnets():
        # Leases ending before this candidate can never overlap a later one.
        while position < len(taken) and taken[position][1] < candidate.first:
            position += 1
        # Sorted by start, so the first range not yet passed is the only one that can overlap.
        overlaps = position < len(taken) and taken[position][0] <= candidate.last
        if not overlaps:
            free.append(candidate)
            if len(free) >= limit:
                break
    return free


def _named(subnet, ipv6_subnet):
    return str(subnet) if ipv6_subnet is None else "%s and %s" % (subnet, ipv6_subnet)


def _fits(config, lease):
    """Whether a lease of ours fits the config: its IPv4 subnet, and an IPv6 subnet exactly when
    the config has IPv6 on."""
    if not config.is_compatible(lease.subnet):
        return False
    if config.ipv6 is None:
        return lease.ipv6_subnet is None
    return lease.ipv6_subnet is not None and config.ipv6.is_compatible(lease.ipv6_subnet)


def acquire_lease(registry, config, attrs, previous_subnet=None, rng=None, log=None, previous_ipv6_subnet=None):
    """Find or create this host's lease, as flanneld does, without taking anyone else's.

    Order: this public IP's compatible lease (renewed); else the previous subnet when no one holds
    it; else a random one of the first 100 free subnets. Writes are compare-and-swap, so a race
    with another host costs a retry, never a shared subnet. With IPv6 on, the IPv6 subnet is
    chosen the same way (`previous_ipv6_subnet` first); as a create stops only a create at the
    same key, two hosts acquiring at once can name one subnet in two keys: the listing settles it
    (the key created first holds it), and the later host, listing after its create, finds its key
    outheld and acquires again (that key deleted, its other subnet kept). A lease of ours whose
    IPv4 subnet fits but whose IPv6 side does not (IPv6 turned on or off) is re-keyed: deleted,
    and its IPv4 subnet (and TTL or reservation) taken again under the new key.
    """
    rng = rng or random.SystemRandom()
    log = log or (lambda message: None)
    ttl = LEASE_TTL
    for _attempt in range(RACE_RETRIES):
        # Not checked against the config: a lease of ours that no longer fits it is deleted below.
        listing = registry.list_leases()
        mine = [lease for lease in listing.leases if lease.attrs.public_ip == attrs.public_ip]
        released = []
        for lease in mine:
            if _fits(config, lease):
                named = _named(lease.subnet, lease.ipv6_subnet)
                log("found lease %s for current IP %s, reusing" % (named, attrs.public_ip))
                renewed = registry.update_lease(lease, attrs, None if lease.is_reservation else LEASE_TTL)
                if renewed is not None:
                    return renewed
                break  # it changed under us: look again
            if config.is_compatible(lease.subnet):
                log("lease %s for current IP is %s IPv6 subnet: re-keying it" % (
                    lease.key, "without an" if config.ipv6 is not None else "with an unused"))
                previous_subnet, ttl = lease.subnet, None if lease.is_reservation else LEASE_TTL
            else:
                log("lease %s for current IP does not fit the network config, deleting it" % lease.subnet)
            if registry.delete_lease(lease):
                released.append(lease)
        else:
            # A key of ours that lost one of its subnets to a key created first (two hosts acquiring
            # at once, on a dual-stack network): deleted, and its subnets asked for again (the one
            # still held elsewhere is then passed over).
            for lease, why in listing.outheld:
                if lease.attrs.public_ip == attrs.public_ip and not lease.is_reservation:
                    log("lease %s for current IP is not held: %s; deleting it" % (lease.key, why))
                    if registry.delete_lease(lease):
                        released.append(lease)
                        previous_subnet = previous_subnet or lease.subnet
                        previous_ipv6_subnet = previous_ipv6_subnet or lease.ipv6_subnet
            subnet, ipv6_subnet = _pick_subnets(config, listing, released, (previous_subnet, previous_ipv6_subnet),
                                                rng, log)
            # An IPv4-only create is the call it always was (registries of tests and tools keep working).
            extra = {"ipv6_subnet": ipv6_subnet} if ipv6_subnet is not None else {}
            created = registry.create_lease(subnet, attrs, ttl, **extra)
            if created is not None:
                log("acquired lease %s" % _named(subnet, ipv6_subnet))
                return created
            log("subnet %s was taken by another host meanwhile, retrying" % _named(subnet, ipv6_subnet))
    raise LeaseError("Max retries reached trying to acquire a subnet")


def _without(taken, released):
    """`taken` less one entry per subnet in `released` (keys this host just deleted)."""
    taken = list(taken)
    for subnet in released:
        if subnet in taken:
            taken.remove(subnet)
    return taken


def _pick_subnets(config, listing, released, previous, rng, log):
    """(IPv4 subnet, IPv6 subnet or None) for a new key. `listing.taken` (`taken_ipv6`): the
    subnets of every key under subnets/, valid leases or not (a key with a bad value still stops
    a create at that key), less those of our own keys just deleted (`released` leases)."""
    taken = _without(listing.taken, [lease.subnet for lease in released])
    leased = set(lease.subnet for lease in listing.leases if lease_problem(lease, config) is None)
    subnet = _pick_subnet(config, leased, taken, previous[0], rng, log, "")
    if config.ipv6 is None:
        return subnet, None
    taken = _without(listing.taken_ipv6, [lease.ipv6_subnet for lease in released])
    leased = set(lease.ipv6_subnet for lease in listing.leases if lease_problem(lease, config) is None)
    return subnet, _pick_subnet(config.ipv6, leased, taken, previous[1], rng, log, "IPv6 ")


def _pick_subnet(space, leased, taken, previous_subnet, rng, log, family):
    """One family's subnet in `space` (the config, or its ipv6 SubnetRange); `leased`: the
    subnets of that family valid leases hold, to count the keys that hold none."""
    if previous_subnet is not None:
        if not space.is_compatible(previous_subnet):
            log("previous %ssubnet %s does not fit the network config, ignoring it" % (family, previous_subnet))
        elif previous_subnet in taken:
            log("previous %ssubnet %s is held by another host, not taking it" % (family, previous_subnet))
        else:
            return previous_subnet
    free = free_subnets(space, taken)
    if not free:
        raise OutOfSubnets(space, len(set(subnet for subnet in taken
                                          if space.is_compatible(subnet) and subnet not in leased)))
    return rng.choice(free)
