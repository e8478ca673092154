"""The flannel network config stored at <prefix>/config: parsing, defaults and validation.

Rules follow flanneld v0.10 (same defaults, same messages), plus the checks upstream misses:
SubnetMin > SubnetMax, VNI and Port ranges, unsupported backend types, wrong JSON types.
Every error names the offending key, so callers can report it as is.
"""

import json

try:
    from netaddr import AddrFormatError, IPAddress, IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    AddrFormatError = ValueError
    IPAddress = IPNetwork = None

SUPPORTED_BACKENDS = ("vxlan", "host-gw")
VXLAN_DEFAULT_PORT = 8472
VNI_MAX = 2 ** 24 - 1


class ConfigError(ValueError):
    """An invalid network config; `key` names the offending key, `rule` the rule it broke."""

    def __init__(self, key, rule):
        super().__init__("%s: %s" % (key, rule))
        self.key = key
        self.rule = rule

    def under(self, name):
        """The message for a config held in variable `name`: '<name>.<key>: <rule>' ('<name>: ...'
        when the whole document is at fault)."""
        return "%s: %s" % (name if self.key == "config" else "%s.%s" % (name, self.key), self.rule)


class BackendConfig:
    """The Backend object: its type and the vxlan options (ignored by host-gw)."""

    def __init__(self, type_name, vni=1, port=0, gbp=False, direct_routing=False, mtu=None):
        self.type = type_name
        self.vni = vni
        self.port = port
        self.gbp = gbp
        self.direct_routing = direct_routing
        self.mtu = mtu

    @property
    def dst_port(self):
        """The UDP port on the wire: flannel's Port 0 means the kernel's 8472."""
        return self.port or VXLAN_DEFAULT_PORT

    def as_dict(self):
        if self.type != "vxlan":
            return {"Type": self.type}
        data = {"Type": "vxlan", "VNI": self.vni, "Port": self.port,
                "GBP": self.gbp, "DirectRouting": self.direct_routing}
        if self.mtu is not None:
            data["MTU"] = self.mtu
        return data


class NetworkConfig:
    """An effective (defaults applied, validated) network config."""

    def __init__(self, network, subnet_len, subnet_min, subnet_max, backend):
        self.network = network
        self.subnet_len = subnet_len
        self.subnet_min = subnet_min
        self.subnet_max = subnet_max
        self.backend = backend

    @property
    def subnet_size(self):
        return 1 << (32 - self.subnet_len)

    def is_compatible(self, subnet):
        """Whether a leased subnet still fits this config (flannel's lease compatibility rule)."""
        return (subnet.prefixlen == self.subnet_len
                and self.subnet_min <= subnet.ip <= self.subnet_max)

    def candidate_subnets(self):
        """Every subnet a lease may take, in address order."""
        step = self.subnet_size
        for value in range(int(self.subnet_min), int(self.subnet_max) + 1, step):
            yield IPNetwork("%s/%d" % (IPAddress(value), self.subnet_len))

    def as_dict(self):
        """The effective config in flannel's key spelling; equal dicts mean equal configs."""
        return {
            "Network": str(self.network),
            "SubnetLen": self.subnet_len,
            "SubnetMin": str(self.subnet_min),
            "SubnetMax": str(self.subnet_max),
            "Backend": self.backend.as_dict(),
        }

    def __eq__(self, other):
        return isinstance(other, NetworkConfig) and self.as_dict() == other.as_dict()

    def __repr__(self):
        return "NetworkConfig(%s)" % json.dumps(self.as_dict(), sort_keys=True)


def _fold_keys(data, where):
    """Go's encoding/json matches keys case-insensitively; fold them to lower case."""
    if not isinstance(data, dict):
        raise ConfigError(where, "must be a JSON object")
    return dict((str(key).lower(), value) for key, value in data.items())


def _integer(value, key):
    # bool is an int subclass in Python, but JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, "must be an integer, got %s" % json.dumps(value))
    return value


def _boolean(value, key):
    if not isinstance(value, bool):
        raise ConfigError(key, "must be true or false, got %s" % json.dumps(value))
    return value


def _ipv4_network(value, key):
    if not isinstance(value, str) or "/" not in value:
        raise ConfigError(key, "must be an IPv4 CIDR such as 10.0.0.0/8, got %s" % json.dumps(value))
    try:
        network = IPNetwork(value, flags=0)
    except (AddrFormatError, ValueError, TypeError):
        raise ConfigError(key, "must be an IPv4 CIDR such as 10.0.0.0/8, got %s" % json.dumps(value))
    if network.version != 4:
        raise ConfigError(key, "must be an IPv4 CIDR, got %s" % json.dumps(value))
    return network.cidr  # host bits masked, as Go's net.ParseCIDR does


def _ipv4_address(value, key):
    try:
        if not isinstance(value, str):
            raise TypeError(value)
        address = IPAddress(value, flags=0)
    except (AddrFormatError, ValueError, TypeError):
        raise ConfigError(key, "must be an IPv4 address, got %s" % json.dumps(value))
    if address.version != 4:
        raise ConfigError(key, "must be an IPv4 address, got %s" % json.dumps(value))
    return address


def _subnet_len(fields, network):
    if "subnetlen" not in fields:
        if network.prefixlen > 28:
            raise ConfigError("Network", "Network is too small. Minimum useful network prefix is /28")
        return 24 if network.prefixlen <= 22 else network.prefixlen + 2
    subnet_len = _integer(fields["subnetlen"], "SubnetLen")
    if subnet_len > 30:
        raise ConfigError("SubnetLen", "SubnetLen must be less than /31")
    if subnet_len < network.prefixlen + 2:
        raise ConfigError("SubnetLen", "Network must be able to accommodate at least four subnets")
    return subnet_len


def _bound(fields, key, network, subnet_len, default):
    if key.lower() not in fields:
        return default
    address = _ipv4_address(fields[key.lower()], key)
    if address not in network:
        raise ConfigError(key, "%s is not in the range of the Network" % key)
    if int(address) % (1 << (32 - subnet_len)):
        raise ConfigError(key, "%s is not on a SubnetLen boundary: %s" % (key, address))
    return address


def _backend(value):
    fields = _fold_keys(value, "Backend") if value is not None else {}
    type_name = fields.get("type", "udp")  # flanneld's default when Backend or Type is absent
    if not isinstance(type_name, str):
        raise ConfigError("Backend.Type", "must be a string, got %s" % json.dumps(type_name))
    type_name = type_name.lower()
    if type_name == "udp":
        raise ConfigError("Backend.Type", "backend type udp is not supported by this agent; "
                                          "use one of: %s" % ", ".join(SUPPORTED_BACKENDS))
    if type_name not in SUPPORTED_BACKENDS:
        raise ConfigError("Backend.Type", "unknown backend type: %s" % type_name)
    if type_name != "vxlan":
        return BackendConfig(type_name)
    vni = _integer(fields.get("vni", 1), "Backend.VNI")
    if not 1 <= vni <= VNI_MAX:
        raise ConfigError("Backend.VNI", "must be between 1 and %d, got %d" % (VNI_MAX, vni))
    port = _integer(fields.get("port", 0), "Backend.Port")
    if port != 0 and not 1 <= port <= 65535:
        raise ConfigError("Backend.Port", "must be between 1 and 65535 (0 means %d), got %d"
                          % (VXLAN_DEFAULT_PORT, port))
    mtu = fields.get("mtu")
    if mtu is not None:
        mtu = _integer(mtu, "Backend.MTU")
        if not 576 <= mtu <= 65535 - 50:
            raise ConfigError("Backend.MTU", "must be between 576 and 65485, got %d" % mtu)
    return BackendConfig("vxlan", vni=vni, port=port,
                         gbp=_boolean(fields.get("gbp", False), "Backend.GBP"),
                         direct_routing=_boolean(fields.get("directrouting", False),
                                                 "Backend.DirectRouting"),
                         mtu=mtu)


def parse_network_config(data):
    """Parse and validate a network config given as JSON text (str/bytes) or an already-decoded dict.

    Returns a NetworkConfig with flanneld's defaults applied; raises ConfigError naming the key.
    """
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as err:
            raise ConfigError("config", "is not valid JSON: %s" % err)
    fields = _fold_keys(data, "config")
    if fields.get("network") in (None, ""):
        raise ConfigError("Network", "is required: please define a correct Network parameter "
                                     "in the flannel config (an IPv4 CIDR such as 10.0.0.0/8)")
    network = _ipv4_network(fields["network"], "Network")
    subnet_len = _subnet_len(fields, network)
    size = 1 << (32 - subnet_len)
    subnet_min = _bound(fields, "SubnetMin", network, subnet_len,
                        IPAddress(int(network.first) + size))
    subnet_max = _bound(fields, "SubnetMax", network, subnet_len,
                        IPAddress(int(network.last) + 1 - size))
    if subnet_min > subnet_max:
        raise ConfigError("SubnetMin", "SubnetMin %s is above SubnetMax %s: no subnet can be leased"
                          % (subnet_min, subnet_max))
    return NetworkConfig(network, subnet_len, subnet_min, subnet_max, _backend(fields.get("backend")))
