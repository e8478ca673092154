"""The dual-stack keys of the network config (flannel v0.15+): EnableIPv4, EnableIPv6, IPv6Network,
IPv6SubnetLen, IPv6SubnetMin and IPv6SubnetMax, with upstream's defaults and messages plus the
checks upstream misses (as config.py does for the IPv4 keys). config.py calls parse_ipv6() from
its one parser; this module only knows the IPv6 side."""

from .config_json import IPV6_KEYS, ConfigError, check_overlay_range, boolean, shown, subnet_length, text

try:
    from netaddr import AddrFormatError, IPAddress, IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    AddrFormatError = ValueError
    IPAddress = IPNetwork = None

# The keys that only mean something with EnableIPv6 true.
_IPV6_ONLY_KEYS = IPV6_KEYS[2:]
# IPv6 space no overlay may use: an address there is no host's unicast address.
IPV6_NOT_UNICAST = (("::/96", "unspecified, loopback and IPv4-compatible"), ("::ffff:0:0/96", "IPv4-mapped"),
                    ("fe80::/10", "link-local"), ("ff00::/8", "multicast"))
_EXAMPLE_NETWORK = "an IPv6 CIDR such as fd00:10::/48"


class SubnetRange:
    """One family's side of a config: the Network, the length of each host's subnet and the range
    leases are taken from. NetworkConfig is the IPv4 one; this class serves IPv6 (`ipv6` of a
    NetworkConfig), and lease.free_subnets() takes either."""

    def __init__(self, network, subnet_len, subnet_min, subnet_max):
        self.network = network
        self.subnet_len = subnet_len
        self.subnet_min = subnet_min
        self.subnet_max = subnet_max

    @property
    def subnet_size(self):
        return 1 << ((128 if self.network.version == 6 else 32) - self.subnet_len)

    def is_compatible(self, subnet):
        """Whether a leased subnet still fits (flannel's lease compatibility rule)."""
        return (subnet is not None and subnet.version == self.network.version and subnet.prefixlen == self.subnet_len
                and self.subnet_min <= subnet.ip <= self.subnet_max)

    def candidate_subnets(self):
        """Every subnet a lease may take, in address order (lazily: an IPv6 range is huge)."""
        for value in range(int(self.subnet_min), int(self.subnet_max) + 1, self.subnet_size):
            yield IPNetwork("%s/%d" % (IPAddress(value, self.network.version), self.subnet_len))

    def as_dict(self):
        return {"EnableIPv6": True, "IPv6Network": str(self.network), "IPv6SubnetLen": self.subnet_len,
                "IPv6SubnetMin": str(self.subnet_min), "IPv6SubnetMax": str(self.subnet_max)}


def _ipv6_network(value):
    given = text(value, "IPv6Network", _EXAMPLE_NETWORK)
    try:
        if "/" not in given or "%" in given:
            raise ValueError(given)
        network = IPNetwork(given, flags=0)
        if network.version != 6:
            raise ValueError(given)
    except (AddrFormatError, ValueError, TypeError):
        raise ConfigError("IPv6Network", "must be %s, got %s" % (_EXAMPLE_NETWORK, shown(value)))
    check_overlay_range(network, "IPv6Network", given,
                        [(IPNetwork(block), name) for block, name in IPV6_NOT_UNICAST], "fd00:10::/48")
    return network


def _ipv6_bound(fields, key, network, subnet_len, default):
    if key.lower() not in fields:
        return default
    given = text(fields[key.lower()], key, "an IPv6 address")
    try:
        if "%" in given or "/" in given:
            raise ValueError(given)
        address = IPAddress(given, 6, flags=0)
    except (AddrFormatError, ValueError, TypeError):
        raise ConfigError(key, "must be an IPv6 address, got %s" % shown(given))
    if address not in network:
        raise ConfigError(key, "%s is not in the range of the IPv6Network" % key)
    if int(address) % (1 << (128 - subnet_len)):
        raise ConfigError(key, "%s is not on an IPv6SubnetLen boundary: %s" % (key, address))
    return address


def parse_ipv6(fields, reader):
    """The IPv6 side (a SubnetRange) of a config's folded `fields`, or None when EnableIPv6 is not
    true. `reader` (config_json.KeyReader) notes IPv6 keys given without EnableIPv6."""
    if not boolean(fields.get("enableipv4", True), "EnableIPv4"):
        raise ConfigError("EnableIPv4", "must be true: an IPv6-only network is not supported (the overlay's "
                                        "hosts are reached over IPv4); use EnableIPv6 beside Network")
    if not boolean(fields.get("enableipv6", False), "EnableIPv6"):
        for key in _IPV6_ONLY_KEYS:
            if key.lower() in fields:
                reader.note(key, "only used with \"EnableIPv6\": true")
        return None
    if fields.get("ipv6network") in (None, ""):
        raise ConfigError("IPv6Network", "is required with EnableIPv6: please define a correct IPv6Network "
                                         "parameter in the flannel config (%s)" % _EXAMPLE_NETWORK)
    network = _ipv6_network(fields["ipv6network"])
    subnet_len = subnet_length(fields, network, "IPv6")
    size = 1 << (128 - subnet_len)
    subnet_min = _ipv6_bound(fields, "IPv6SubnetMin", network, subnet_len, IPAddress(network.first + size, 6))
    subnet_max = _ipv6_bound(fields, "IPv6SubnetMax", network, subnet_len, IPAddress(network.last + 1 - size, 6))
    if subnet_min > subnet_max:
        raise ConfigError("IPv6SubnetMin", "IPv6SubnetMin %s is above IPv6SubnetMax %s: no IPv6 subnet can be leased"
                          % (subnet_min, subnet_max))
    return SubnetRange(network, subnet_len, subnet_min, subnet_max)
