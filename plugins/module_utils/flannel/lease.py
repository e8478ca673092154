"""Subnet leases: flannel's key and JSON formats, and the acquisition policy.

A lease lives at <prefix>/subnets/A.B.C.D-LEN with the JSON value flanneld writes
({"PublicIP":..,"BackendType":..,"BackendData":{"VtepMAC":..}}), so upstream flanneld
and this agent can share one registry.
"""

import json
import random
import re

try:
    from netaddr import IPAddress, IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    IPAddress = IPNetwork = None

LEASE_TTL = 24 * 3600
MAX_CANDIDATES = 100
RACE_RETRIES = 10
# flanneld's leases are under 200 bytes and two levels deep; anything far larger is not a lease,
# and the bounds keep a hostile value from costing memory or a RecursionError in the parser.
MAX_LEASE_BYTES = 4096
MAX_LEASE_DEPTH = 8
# The backend types flanneld v0.10.0 registers (its backend packages: alivpc, alloc, awsvpc,
# extension, gce, hostgw, ipip, udp, vxlan). A lease without BackendType is a udp lease.
# Later releases add wireguard (v0.16), whose BackendData is {"PublicKey": .., "Port": ..}.
KNOWN_BACKEND_TYPES = ("ali-vpc", "alloc", "aws-vpc", "extension", "gce", "host-gw", "ipip", "udp", "vxlan",
                       "wireguard")
# 0.0.0.0/8 (this network), 127.0.0.0/8 (loopback), 224.0.0.0/4 (multicast) and 240.0.0.0/4
# (reserved, with the broadcast address): no host can be reached at any of them.
_NOT_UNICAST = ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4")
# The lease fields that identify a peer's entries (peer_identity.py; metrics labels by them).
VTEP_MAC = "VtepMAC"
PUBLIC_IP = "PublicIP"
PUBLIC_KEY = "PublicKey"
IDENTITY_KINDS = (VTEP_MAC, PUBLIC_IP, PUBLIC_KEY)
_KEY_PATTERN = re.compile(r"^(\d+\.\d+\.\d+\.\d+)-(\d+)$")
_MAC_PATTERN = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
# Characters Go's json.Marshal escapes inside strings (they appear nowhere else in JSON text).
_GO_ESCAPES = re.compile("[<>&\u2028\u2029]")


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


def subnet_key(subnet):
    """flannel's key for a subnet: 10.5.34.0/24 -> '10.5.34.0-24'."""
    return "%s-%d" % (subnet.ip, subnet.prefixlen)


def parse_subnet_key(key):
    """The subnet named by a lease key (its last path element); ValueError when it is not one.

    Only flannel's own spelling is a key: no host bits, no leading zeros. Another spelling of a
    subnet would be read from one key and updated or deleted at another.
    """
    name = str(key).rsplit("/", 1)[-1]
    match = _KEY_PATTERN.match(name)
    if not match or int(match.group(2)) > 32:
        raise ValueError("not a subnet lease key (A.B.C.D-LEN): %r" % key)
    try:
        subnet = IPNetwork("%s/%s" % match.groups(), flags=0)
    except Exception:
        raise ValueError("not a subnet lease key (A.B.C.D-LEN): %r" % key)
    if subnet_key(subnet.cidr) != name:
        raise ValueError("not a subnet lease key: %r is not written as flannel writes %s"
                         % (key, subnet_key(subnet.cidr)))
    return subnet.cidr


def ipv4_unicast_problem(text):
    """Why `text` is not an IPv4 unicast address a host can be reached at, or None."""
    try:
        if not isinstance(text, str):
            raise TypeError(text)
        address = IPAddress(text, flags=0)
    except Exception:
        return "%s is not an IPv4 address" % json.dumps(text, default=str)[:80]
    if address.version != 4:
        return "%s is not an IPv4 address (the data plane is IPv4)" % text
    for block in _NOT_UNICAST:
        if address in IPNetwork(block):
            return "%s is not a unicast address (it is in %s)" % (text, block)
    return None


def unicast_mac_problem(text):
    """Why `text` is not a unicast MAC written aa:bb:cc:dd:ee:ff, or None."""
    if not isinstance(text, str) or not _MAC_PATTERN.match(text):
        return "%s is not a MAC address (aa:bb:cc:dd:ee:ff)" % json.dumps(text, default=str)[:80]
    if int(text[:2], 16) & 1:
        return "%s is a multicast MAC address" % text
    if text == "00:00:00:00:00:00":
        return "%s is the all-zero MAC address" % text
    return None


def _refuse_constant(name):
    raise ValueError("%s is not a JSON number (JSON has no NaN or Infinity)" % name)


def strict_json_loads(text):
    """json.loads without Python's extensions: NaN, Infinity and -Infinity are refused."""
    return json.loads(text, parse_constant=_refuse_constant)


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


def _json_depth_exceeds(text, limit):
    """Whether JSON text nests objects/arrays deeper than `limit` (strings are skipped)."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


class LeaseAttrs:
    """What a host publishes about itself: its public IP and backend data. `vtep_mac` is a vxlan
    lease's BackendData; `backend_data` any other type's, as decoded JSON (the extension backend's
    string, for one), None when the lease has none."""

    def __init__(self, public_ip, backend_type=None, vtep_mac=None, backend_data=None):
        self.public_ip = str(IPAddress(public_ip))
        self.backend_type = backend_type
        self.vtep_mac = vtep_mac
        self.backend_data = backend_data

    def to_json(self):
        """Byte-for-byte what flanneld's Go json.Marshal writes (field order, no spaces, UTF-8,
        and <, >, & and U+2028/9 escaped as Go escapes them)."""
        data = {"PublicIP": self.public_ip}
        if self.backend_type and self.backend_type != "udp":  # flanneld's udp backend writes none
            data["BackendType"] = self.backend_type
        if self.vtep_mac:
            data["BackendData"] = {"VtepMAC": self.vtep_mac}
        elif self.backend_data is not None:
            data["BackendData"] = self.backend_data
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return _GO_ESCAPES.sub(lambda match: "\\u%04x" % ord(match.group()), text)

    @classmethod
    def from_json(cls, text):
        """Parse and check a lease value as read from etcd; ValueError names the field and rule.

        Keys match case-insensitively, as Go's encoding/json does. A missing BackendType reads
        as "udp" (flanneld's udp backend writes none); a VtepMAC, where present, must be a
        unicast MAC, and a vxlan lease must have one.
        """
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if not isinstance(text, str):
            raise ValueError("lease value is not text")
        size = len(text.encode("utf-8"))
        if size > MAX_LEASE_BYTES:
            raise ValueError("lease value is %d bytes, above the limit of %d" % (size, MAX_LEASE_BYTES))
        if _json_depth_exceeds(text, MAX_LEASE_DEPTH):
            raise ValueError("lease value nests deeper than %d levels" % MAX_LEASE_DEPTH)
        try:
            data = strict_json_loads(text)
        except ValueError as err:
            raise ValueError("lease value is not JSON: %s" % err)
        if not isinstance(data, dict):
            raise ValueError("lease value is not a JSON object")
        fields = dict((str(k).lower(), v) for k, v in data.items())
        problem = ipv4_unicast_problem(fields.get("publicip"))
        if problem:
            raise ValueError("lease PublicIP: %s" % problem)
        backend_type = fields.get("backendtype")
        if backend_type in (None, ""):
            backend_type = "udp"
        if backend_type not in KNOWN_BACKEND_TYPES:
            raise ValueError("lease BackendType %s is not a flannel backend (%s)"
                             % (json.dumps(backend_type)[:80], ", ".join(KNOWN_BACKEND_TYPES)))
        backend_data = fields.get("backenddata")
        mac = other_data = None
        if isinstance(backend_data, dict):
            mac = dict((str(k).lower(), v) for k, v in backend_data.items()).get("vtepmac")
        elif backend_type == "vxlan" and backend_data is not None:
            raise ValueError("lease BackendData is not a JSON object")
        if mac is not None or backend_type == "vxlan":
            problem = unicast_mac_problem(mac)
            if problem:
                raise ValueError("lease VtepMAC: %s" % problem)
            mac = mac.lower()
        if backend_type != "vxlan":
            other_data = backend_data  # each backend checks the data it reads (extension: a string)
        return cls(fields["publicip"], backend_type, mac, other_data)

    def __eq__(self, other):
        return isinstance(other, LeaseAttrs) and self.to_json() == other.to_json()

    def __ne__(self, other):
        return not self == other

    def __repr__(self):
        return "LeaseAttrs(%s)" % self.to_json()


class Lease:
    """A subnet held by a host. `ttl` is the seconds left as etcd reported them (None: no TTL).
    `created_index`: etcd's index when the key was created (kept by updates), which orders the
    claims of leases sharing an identity (peer_identity.py)."""

    def __init__(self, subnet, attrs, ttl=None, modified_index=0, created_index=0):
        self.subnet = subnet
        self.attrs = attrs
        self.ttl = ttl
        self.modified_index = modified_index
        self.created_index = created_index

    @property
    def key(self):
        return subnet_key(self.subnet)

    @property
    def is_reservation(self):
        """A lease without TTL, written by an operator: kept forever, never renewed."""
        return self.ttl is None

    def __repr__(self):
        return "Lease(%s, %r, ttl=%r, index=%r)" % (self.subnet, self.attrs, self.ttl, self.modified_index)


def lease_problem(lease, config, onlink=()):
    """Why a parsed lease cannot be used under `config`, or None: its key must be a subnet of
    the Network with the configured SubnetLen, and its PublicIP outside the overlay and neither
    the network nor the broadcast address of a prefix this host is on (`onlink`)."""
    problem = onlink_address_problem(lease.attrs.public_ip, onlink)
    if problem:
        return "PublicIP %s" % problem
    if config is None:
        return None
    subnet = lease.subnet
    if subnet.prefixlen != config.subnet_len or subnet not in config.network:
        return ("subnet %s is not a /%d inside the Network %s"
                % (subnet, config.subnet_len, config.network))
    if IPAddress(lease.attrs.public_ip) in config.network:
        return "PublicIP %s is inside the overlay network %s" % (lease.attrs.public_ip, config.network)
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


def acquire_lease(registry, config, attrs, previous_subnet=None, rng=None, log=None):
    """Find or create this host's lease, as flanneld does, without taking anyone else's.

    Order: this public IP's compatible lease (renewed); else the previous subnet when no one holds
    it; else a random one of the first 100 free subnets. Writes are compare-and-swap, so a race
    with another host costs a retry, never a shared subnet.
    """
    rng = rng or random.SystemRandom()
    log = log or (lambda message: None)
    for _attempt in range(RACE_RETRIES):
        # Not checked against the config: a lease of ours that no longer fits it is deleted below.
        listing = registry.list_leases()
        mine = [lease for lease in listing.leases if lease.attrs.public_ip == attrs.public_ip]
        for lease in mine:
            if config.is_compatible(lease.subnet):
                log("found lease %s for current IP %s, reusing" % (lease.subnet, attrs.public_ip))
                renewed = registry.update_lease(lease, attrs, None if lease.is_reservation else LEASE_TTL)
                if renewed is not None:
                    return renewed
                break  # it changed under us: look again
            log("lease %s for current IP does not fit the network config, deleting it" % lease.subnet)
            registry.delete_lease(lease)
        else:
            subnet = _pick_subnet(config, listing, previous_subnet, rng, log)
            created = registry.create_lease(subnet, attrs, LEASE_TTL)
            if created is not None:
                log("acquired lease %s" % subnet)
                return created
            log("subnet %s was taken by another host meanwhile, retrying" % subnet)
    raise LeaseError("Max retries reached trying to acquire a subnet")


def _pick_subnet(config, listing, previous_subnet, rng, log):
    """`listing.taken`: the subnets of every key under subnets/, valid leases or not (a key with a
    bad value still stops a create at that key)."""
    taken = listing.taken
    if previous_subnet is not None:
        if not config.is_compatible(previous_subnet):
            log("previous subnet %s does not fit the network config, ignoring it" % previous_subnet)
        elif previous_subnet in taken:
            log("previous subnet %s is held by another host, not taking it" % previous_subnet)
        else:
            return previous_subnet
    free = free_subnets(config, taken)
    if not free:
        leased = set(lease.subnet for lease in listing.leases if lease_problem(lease, config) is None)
        raise OutOfSubnets(config, len(set(subnet for subnet in taken
                                           if config.is_compatible(subnet) and subnet not in leased)))
    return rng.choice(free)
