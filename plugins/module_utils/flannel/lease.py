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
_KEY_PATTERN = re.compile(r"^(\d+\.\d+\.\d+\.\d+)-(\d+)$")


class LeaseError(Exception):
    """Acquisition failed for a reason retrying right away cannot fix."""


class OutOfSubnets(LeaseError):
    def __init__(self, config):
        super().__init__("out of subnets: every /%d between %s and %s is leased"
                         % (config.subnet_len, config.subnet_min, config.subnet_max))


def subnet_key(subnet):
    """flannel's key for a subnet: 10.5.34.0/24 -> '10.5.34.0-24'."""
    return "%s-%d" % (subnet.ip, subnet.prefixlen)


def parse_subnet_key(key):
    """The subnet named by a lease key (its last path element); ValueError when it is not one."""
    name = key.rsplit("/", 1)[-1]
    match = _KEY_PATTERN.match(name)
    if not match or int(match.group(2)) > 32:
        raise ValueError("not a subnet lease key: %r" % key)
    try:
        return IPNetwork("%s/%s" % match.groups(), flags=0).cidr
    except Exception:
        raise ValueError("not a subnet lease key: %r" % key)


class LeaseAttrs:
    """What a host publishes about itself: its public IP and backend data."""

    def __init__(self, public_ip, backend_type=None, vtep_mac=None):
        self.public_ip = str(IPAddress(public_ip))
        self.backend_type = backend_type
        self.vtep_mac = vtep_mac

    def to_json(self):
        """Byte-for-byte what flanneld's Go json.Marshal writes (field order, no spaces)."""
        data = {"PublicIP": self.public_ip}
        if self.backend_type:
            data["BackendType"] = self.backend_type
        if self.vtep_mac:
            data["BackendData"] = {"VtepMAC": self.vtep_mac}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text):
        """Parse a lease value; ValueError names what is wrong with it."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as err:
            raise ValueError("lease value is not JSON: %s" % err)
        if not isinstance(data, dict):
            raise ValueError("lease value is not a JSON object")
        fields = dict((str(k).lower(), v) for k, v in data.items())
        try:
            public_ip = IPAddress(fields.get("publicip"), flags=0)
        except Exception:
            raise ValueError("lease PublicIP is not an IP address: %r" % fields.get("publicip"))
        backend_data = fields.get("backenddata") or {}
        mac = None
        if isinstance(backend_data, dict):
            mac = dict((str(k).lower(), v) for k, v in backend_data.items()).get("vtepmac")
        return cls(str(public_ip), fields.get("backendtype") or None, mac or None)

    def __eq__(self, other):
        return isinstance(other, LeaseAttrs) and self.to_json() == other.to_json()

    def __ne__(self, other):
        return not self == other

    def __repr__(self):
        return "LeaseAttrs(%s)" % self.to_json()


class Lease:
    """A subnet held by a host. `ttl` is the seconds left as etcd reported them (None: no TTL)."""

    def __init__(self, subnet, attrs, ttl=None, modified_index=0):
        self.subnet = subnet
        self.attrs = attrs
        self.ttl = ttl
        self.modified_index = modified_index

    @property
    def key(self):
        return subnet_key(self.subnet)

    @property
    def is_reservation(self):
        """A lease without TTL, written by an operator: kept forever, never renewed."""
        return self.ttl is None

    def __repr__(self):
        return "Lease(%s, %r, ttl=%r, index=%r)" % (self.subnet, self.attrs, self.ttl, self.modified_index)


def free_subnets(config, leases, limit=MAX_CANDIDATES):
    """The first `limit` subnets of the config's range that overlap no lease, in address order."""
    taken = sorted((lease.subnet.first, lease.subnet.last) for lease in leases)
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
        leases = registry.list_leases().leases
        mine = [lease for lease in leases if lease.attrs.public_ip == attrs.public_ip]
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
            subnet = _pick_subnet(config, leases, previous_subnet, rng, log)
            created = registry.create_lease(subnet, attrs, LEASE_TTL)
            if created is not None:
                log("acquired lease %s" % subnet)
                return created
            log("subnet %s was taken by another host meanwhile, retrying" % subnet)
    raise LeaseError("Max retries reached trying to acquire a subnet")


def _pick_subnet(config, leases, previous_subnet, rng, log):
    if previous_subnet is not None:
        if not config.is_compatible(previous_subnet):
            log("previous subnet %s does not fit the network config, ignoring it" % previous_subnet)
        elif any(lease.subnet.first <= previous_subnet.last and lease.subnet.last >= previous_subnet.first
                 for lease in leases):
            log("previous subnet %s is held by another host, not taking it" % previous_subnet)
        else:
            return previous_subnet
    free = free_subnets(config, leases)
    if not free:
        raise OutOfSubnets(config)
    return rng.choice(free)
