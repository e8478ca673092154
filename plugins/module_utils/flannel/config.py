"""The flannel network config stored at <prefix>/config: parsing, defaults and validation.

Rules follow flanneld v0.10 (same defaults, same messages, keys case-insensitive as Go's
encoding/json matches them), plus the checks upstream misses: bounded size and nesting, unknown
keys, a Network of IPv4 unicast space given as a network address, SubnetMin > SubnetMax, VNI and
Port ranges, unsupported backend types, wrong JSON types.
Every error names the offending key and the rule, so callers can report it as is.
"""

import collections
import hashlib
import json
import re

from .backends import BACKENDS
# ConfigError is this module's API too (the modules and the action plugin catch it).
from .config_json import (IPV6_KEYS, ConfigError, KeyReader, boolean as _boolean, check_overlay_range, decode,
                          integer as _integer, shown, subnet_length, text as _text)

try:
    from netaddr import AddrFormatError, IPAddress, IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    AddrFormatError = ValueError
    IPAddress = IPNetwork = None

# Backend keys whose values are secrets (the wireguard PSK), and what is shown instead.
SECRET_BACKEND_KEYS = ("PSK",)
SECRET_MASK = "(set, not shown)"

SUPPORTED_BACKENDS = tuple(BACKENDS)
# The backends that may run a dual-stack network (upstream's udp never carried IPv6; alloc only
# leases, both families alike).
IPV6_BACKENDS = ("vxlan", "host-gw", "alloc")
VXLAN_DEFAULT_PORT = 8472
UDP_DEFAULT_PORT = 8285
WIREGUARD_DEFAULT_PORT = 51820
VNI_MAX = 2 ** 24 - 1
# flanneld v0.10's extension keys; each holds one command line ("" or absent: none).
EXTENSION_COMMANDS = ("PreStartupCommand", "PostStartupCommand", "SubnetAddCommand", "SubnetRemoveCommand")
COMMAND_TIMEOUT = 30  # seconds, the default of Backend.CommandTimeout (v0.10 waits forever)
COMMAND_TIMEOUT_MAX = 3600

# The dual-stack keys, which config_ipv6.py reads. That module (and the extension's and wireguard's
# checks below) is imported by the parse that needs it: an agent on a plain IPv4 vxlan config loads
# none of them.
CONFIG_KEYS = ("Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend") + IPV6_KEYS
BACKEND_KEYS = dict((name, entry.config_keys) for name, entry in BACKENDS.items())
ALL_BACKEND_KEYS = tuple(collections.OrderedDict.fromkeys(key for keys in BACKEND_KEYS.values() for key in keys))

# IPv4 space that is not unicast host space: an overlay there would break the hosts.
NOT_UNICAST = (("0.0.0.0/8", "'this network'"), ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"),
               ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved and broadcast"))
_DOTTED_QUAD = r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}"
_CIDR = re.compile(r"%s/(?:0|[1-9][0-9]?)\Z" % _DOTTED_QUAD)
_ADDRESS = re.compile(r"%s\Z" % _DOTTED_QUAD)


class BackendConfig:
    """The Backend object: its type, the vxlan options, Port for udp (host-gw and alloc have none),
    the wireguard options (listen_port, psk, keepalive; mtu shared with vxlan: the underlay's), and
    for extension its command lines ({key: text}, "" for none) and CommandTimeout."""

    def __init__(self, type_name, vni=1, port=0, gbp=False, direct_routing=False, mtu=None,
                 listen_port=WIREGUARD_DEFAULT_PORT, psk=None, keepalive=0, commands=None,
                 command_timeout=COMMAND_TIMEOUT):
        self.type = type_name
        self.vni = vni
        self.port = port
        self.gbp = gbp
        self.direct_routing = direct_routing
        self.mtu = mtu
        self.listen_port = listen_port
        self.psk = psk
        self.keepalive = keepalive
        self.commands = commands or dict.fromkeys(EXTENSION_COMMANDS, "")
        self.command_timeout = command_timeout

    @property
    def dst_port(self):
        """The UDP port on the wire: flannel's Port 0 means the kernel's 8472."""
        return self.port or VXLAN_DEFAULT_PORT

    def as_dict(self):
        if self.type == "udp":
            return {"Type": "udp", "Port": self.port}
        if self.type == "wireguard":
            data = {"Type": "wireguard", "ListenPort": self.listen_port,
                    "PersistentKeepaliveInterval": self.keepalive}
            data.update(dict((key, value) for key, value in (("PSK", self.psk), ("MTU", self.mtu)) if value is not None))
            return data
        if self.type == "extension":
            data = {"Type": "extension", "CommandTimeout": self.command_timeout}
            data.update(self.commands)
            return data
        if self.type != "vxlan":
            return {"Type": self.type}
        data = {"Type": "vxlan", "VNI": self.vni, "Port": self.port,
                "GBP": self.gbp, "DirectRouting": self.direct_routing}
        if self.mtu is not None:
            data["MTU"] = self.mtu
        return data


class NetworkConfig:
    """An effective (defaults applied, validated) network config."""

    def __init__(self, network, subnet_len, subnet_min, subnet_max, backend, ipv6=None):
        self.network = network
        self.subnet_len = subnet_len
        self.subnet_min = subnet_min
        self.subnet_max = subnet_max
        self.backend = backend
        self.ipv6 = ipv6  # config_ipv6.SubnetRange when EnableIPv6 is true, else None
        self.warnings = []  # keys ignored by a non-strict parse, one message each
        self._digest = None

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
        """The effective config in flannel's key spelling; equal dicts mean equal configs. The
        IPv6 keys only when EnableIPv6 is on (so an IPv4-only config's digest is as before)."""
        data = {
            "Network": str(self.network),
            "SubnetLen": self.subnet_len,
            "SubnetMin": str(self.subnet_min),
            "SubnetMax": str(self.subnet_max),
            "Backend": self.backend.as_dict(),
        }
        if self.ipv6 is not None:
            data.update(self.ipv6.as_dict())
        return data

    def __eq__(self, other):
        return isinstance(other, NetworkConfig) and self.as_dict() == other.as_dict()

    def digest(self):
        """12 hex digits naming the effective config: the agent reports the one in force on
        /healthz (at every event), and the collection compares it with the stored config's.
        Computed once: a config is not changed once parsed."""
        if self._digest is None:
            canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
            self._digest = hashlib.sha256(canonical.encode("ascii")).hexdigest()[:12]
        return self._digest

    def secrets(self):
        """The values never to show (a wireguard PSK): the log and the collection's results mask them."""
        return [value for key, value in self.backend.as_dict().items() if key in SECRET_BACKEND_KEYS]

    def shown(self):
        """as_dict() with each secret replaced by SECRET_MASK: what the log and results show."""
        data = self.as_dict()
        data["Backend"] = dict((key, SECRET_MASK if key in SECRET_BACKEND_KEYS else value)
                               for key, value in data["Backend"].items())
        return data

    def __repr__(self):
        return "NetworkConfig(%s)" % json.dumps(self.shown(), sort_keys=True)


def _network(value):
    example = "an IPv4 CIDR such as 10.0.0.0/8"
    text = _text(value, "Network", example)
    try:
        if not _CIDR.match(text):
            raise ValueError(text)
        network = IPNetwork(text, flags=0)
    except (AddrFormatError, ValueError, TypeError):
        raise ConfigError("Network", "must be %s, got %s" % (example, shown(value)))
    check_overlay_range(network, "Network", text, [(IPNetwork(block), name) for block, name in NOT_UNICAST],
                        "10.0.0.0/8", " (not loopback, link-local, multicast or reserved)")
    return network


def _ipv4_address(value, key):
    text = _text(value, key, "an IPv4 address")
    try:
        if not _ADDRESS.match(text):
            raise ValueError(text)
        return IPAddress(text, flags=0)
    except (AddrFormatError, ValueError, TypeError):
        raise ConfigError(key, "must be an IPv4 address, got %s" % shown(value))


def _bound(fields, key, network, subnet_len, default):
    if key.lower() not in fields:
        return default
    address = _ipv4_address(fields[key.lower()], key)
    if address not in network:
        raise ConfigError(key, "%s is not in the range of the Network" % key)
    if int(address) % (1 << (32 - subnet_len)):
        raise ConfigError(key, "%s is not on a SubnetLen boundary: %s" % (key, address))
    return address


def _given_type(value):
    """The Backend's Type as given, lower-cased (flanneld's default udp when absent), or None when
    it is not a type we run; it picks the keys an unknown key's message lists."""
    given = "udp"
    for key, name in (value.items() if isinstance(value, dict) else ()):
        if str(key).lower() == "type":
            given = name  # the last one counts, as in KeyReader.fields
    return given.lower() if isinstance(given, str) and given.lower() in BACKEND_KEYS else None


def _backend(value, reader):
    listed = BACKEND_KEYS.get(_given_type(value))
    fields = reader.fields(value, "Backend", ALL_BACKEND_KEYS, listed) if value is not None else {}
    type_name = fields.get("type", "udp")  # flanneld's default when Backend or Type is absent
    if not isinstance(type_name, str):
        raise ConfigError("Backend.Type", "must be a string, got %s" % shown(type_name))
    type_name = type_name.lower()
    if type_name not in SUPPORTED_BACKENDS:
        raise ConfigError("Backend.Type", "unknown backend type: %s; use one of: %s"
                          % (shown(type_name), ", ".join(SUPPORTED_BACKENDS)))
    known = BACKEND_KEYS[type_name]
    spelled = dict((name.lower(), name) for name in ALL_BACKEND_KEYS)
    for folded in [name for name in fields if spelled[name] not in known]:
        reader.note("Backend." + spelled[folded], "not an option of backend %s (its keys: %s)"
                    % (type_name, ", ".join(known)))
        del fields[folded]
    if type_name == "udp":
        port = _integer(fields.get("port", UDP_DEFAULT_PORT), "Backend.Port")
        if not 1 <= port <= 65535:
            raise ConfigError("Backend.Port", "must be between 1 and 65535, got %d" % port)
        return BackendConfig("udp", port=port)
    if type_name == "wireguard":
        return _wireguard(fields)
    if type_name == "extension":
        return _extension(fields)
    if type_name != "vxlan":
        return BackendConfig(type_name)
    vni = _integer(fields.get("vni", 1), "Backend.VNI")
    if not 1 <= vni <= VNI_MAX:
        raise ConfigError("Backend.VNI", "must be between 1 and %d, got %d" % (VNI_MAX, vni))
    port = _integer(fields.get("port", 0), "Backend.Port")
    if port != 0 and not 1 <= port <= 65535:
        raise ConfigError("Backend.Port", "must be between 1 and 65535 (0 means %d), got %d"
                          % (VXLAN_DEFAULT_PORT, port))
    return BackendConfig("vxlan", vni=vni, port=port,
                         gbp=_boolean(fields.get("gbp", False), "Backend.GBP"),
                         direct_routing=_boolean(fields.get("directrouting", False),
                                                 "Backend.DirectRouting"),
                         mtu=_underlay_mtu(fields, 50))


def _underlay_mtu(fields, overhead):
    """Backend.MTU (the underlay's, as upstream v0.22 reads it), or None when not given: what is
    left for the overlay after the backend's `overhead` must be at least IPv4's 576 bytes."""
    mtu = fields.get("mtu")
    if mtu is None:
        return None
    mtu = _integer(mtu, "Backend.MTU")
    if not 576 <= mtu <= 65535 - overhead:
        raise ConfigError("Backend.MTU", "must be between 576 and %d, got %d" % (65535 - overhead, mtu))
    return mtu


def _wireguard(fields):
    port = _integer(fields.get("listenport", WIREGUARD_DEFAULT_PORT), "Backend.ListenPort")
    if not 1 <= port <= 65535:
        raise ConfigError("Backend.ListenPort", "must be between 1 and 65535, got %d" % port)
    keepalive = _integer(fields.get("persistentkeepaliveinterval", 0), "Backend.PersistentKeepaliveInterval")
    if not 0 <= keepalive <= 65535:
        raise ConfigError("Backend.PersistentKeepaliveInterval",
                          "must be between 0 (off) and 65535 seconds, got %d" % keepalive)
    psk = fields.get("psk")
    from .backends.wireguard_keys import key_problem

    if psk is not None and key_problem(psk):  # the value is a secret: never in the message
        raise ConfigError("Backend.PSK", "must be a WireGuard key (base64 of 32 bytes, as `wg genpsk` writes "
                                         "it), got %d characters that are not one" % len(str(psk)))
    return BackendConfig("wireguard", mtu=_underlay_mtu(fields, 80), listen_port=port, psk=psk,
                         keepalive=keepalive)


def _extension(fields):
    """The extension backend's command lines, each checked the way it will run (split into words,
    no shell unless it starts one), and its CommandTimeout."""
    from .backends.command_lines import split_command

    commands = {}
    for key in EXTENSION_COMMANDS:
        text = fields.get(key.lower())
        if text is None:  # absent, or null as Go reads it: no command
            text = ""
        if not isinstance(text, str):
            raise ConfigError("Backend." + key, "must be a command line (a string), got %s" % shown(text))
        if text:
            try:
                split_command(text)
            except ValueError as error:
                raise ConfigError("Backend." + key, str(error))
        commands[key] = text
    timeout = _integer(fields.get("commandtimeout", COMMAND_TIMEOUT), "Backend.CommandTimeout")
    if not 1 <= timeout <= COMMAND_TIMEOUT_MAX:
        raise ConfigError("Backend.CommandTimeout", "must be between 1 and %d seconds, got %d"
                          % (COMMAND_TIMEOUT_MAX, timeout))
    return BackendConfig("extension", commands=commands, command_timeout=timeout)


def parse_network_config(data, strict=True):
    """Parse and validate a network config given as JSON text (str/bytes) or already-decoded data.

    Returns a NetworkConfig with flanneld's defaults applied; raises ConfigError naming the key and
    the rule. strict=False is the agent's mode, for configs written by other tools: unknown keys
    (and keys given twice) are ignored and listed in the result's `warnings` instead of refused.
    """
    reader = KeyReader(strict)
    fields = reader.fields(decode(data), "config", CONFIG_KEYS)
    if fields.get("network") in (None, ""):
        ignored = "; ignored keys: %s" % "; ".join(reader.summary()) if reader.ignored else ""
        raise ConfigError("Network", "is required: please define a correct Network parameter "
                                     "in the flannel config (an IPv4 CIDR such as 10.0.0.0/8)" + ignored)
    network = _network(fields["network"])
    subnet_len = subnet_length(fields, network)
    size = 1 << (32 - subnet_len)
    subnet_min = _bound(fields, "SubnetMin", network, subnet_len,
                        IPAddress(int(network.first) + size))
    subnet_max = _bound(fields, "SubnetMax", network, subnet_len,
                        IPAddress(int(network.last) + 1 - size))
    if subnet_min > subnet_max:
        raise ConfigError("SubnetMin", "SubnetMin %s is above SubnetMax %s: no subnet can be leased"
                          % (subnet_min, subnet_max))
    ipv6 = None
    if any(key.lower() in fields for key in IPV6_KEYS):  # none given: IPv4 only, nothing to check
        from .config_ipv6 import parse_ipv6

        ipv6 = parse_ipv6(fields, reader)
    backend = _backend(fields.get("backend"), reader)
    if ipv6 is not None and backend.type not in IPV6_BACKENDS:
        raise ConfigError("EnableIPv6", "backend %s does not carry IPv6: use one of %s, or turn EnableIPv6 off"
                          % (backend.type, ", ".join(IPV6_BACKENDS)))
    config = NetworkConfig(network, subnet_len, subnet_min, subnet_max, backend, ipv6)
    config.warnings = reader.summary()
    return config


def check_host_addresses(config, host_addresses):
    """Refuse a Network that contains one of the inventory hosts' addresses ({host name: address})."""
    check_underlay_addresses(config, [(address, "host %s" % host)
                                      for host, address in sorted((host_addresses or {}).items())])


def check_underlay_addresses(config, addresses):
    """Refuse a Network that contains one of the hosts' own addresses: its routes would capture the
    hosts' own traffic. `addresses`: (address, whose) pairs, `whose` naming the owner for the
    message ("host node1"); values that are not IPv4 addresses (host names, empty strings) are
    skipped. The roles pass the inventory's addresses, the agent its own and its peers'."""
    for address, whose in addresses:
        address = str(address).strip()
        if not _ADDRESS.match(address):
            continue
        try:
            address = IPAddress(address, flags=0)
        except (AddrFormatError, ValueError):  # 999.1.1.1
            continue
        if address in config.network:
            raise ConfigError("Network", "%s contains the address %s of %s: the overlay must not cover "
                                         "the hosts' own network" % (config.network, address, whose))
