"""What a lease says about its host: flannel's lease value ({"PublicIP":..,"BackendType":..,
"BackendData":{"VtepMAC":..}}, and on a dual-stack network "PublicIPv6" and "BackendV6Data"), read
with the hostile-input checks and written byte for byte as flanneld writes it. lease.py has the
keys and the acquisition policy."""

import json
import re

try:
    from netaddr import IPAddress, IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    IPAddress = IPNetwork = None

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
# Nor at these IPv6 ones (unspecified, loopback, IPv4-compatible and -mapped, link-local: no
# address of a host others reach by routing; multicast).
_IPV6_NOT_UNICAST = ("::/96", "::ffff:0:0/96", "fe80::/10", "ff00::/8")
# Both lists parsed once: every lease read checks its addresses against them.
_NOT_UNICAST_RANGES = tuple((block, IPNetwork(block).first, IPNetwork(block).last) for block in _NOT_UNICAST) \
    if IPNetwork else ()
_IPV6_NOT_UNICAST_NETWORKS = tuple((block, IPNetwork(block)) for block in _IPV6_NOT_UNICAST) if IPNetwork else ()
_MAC_PATTERN = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
# Characters Go's json.Marshal escapes inside strings (they appear nowhere else in JSON text).
_GO_ESCAPES = re.compile("[<>&\u2028\u2029]")


_last_parsed = [(None, None)]  # parsed_address's last (text, IPAddress), replaced as one tuple


def parsed_address(text):
    """IPAddress(text) (netaddr's strict reading, flags=0). A lease event reads its PublicIP,
    checks it, then checks it against this host: the last text parsed is answered again without
    parsing it again (it was parsed four times per event). Callers never change the IPAddress."""
    last_text, address = _last_parsed[0]
    if text != last_text or not isinstance(text, str):
        address = IPAddress(text, flags=0)
        if isinstance(text, str):
            _last_parsed[0] = (text, address)
    return address


def ipv4_unicast_problem(text):
    """Why `text` is not an IPv4 unicast address a host can be reached at, or None."""
    try:
        if not isinstance(text, str):
            raise TypeError(text)
        address = parsed_address(text)
    except Exception:
        return "%s is not an IPv4 address" % json.dumps(text, default=str)[:80]
    if address.version != 4:
        return "%s is not an IPv4 address (the data plane is IPv4)" % text
    value = address.value  # compared as integers: four IPNetwork lookups cost more at every lease event
    for block, first, last in _NOT_UNICAST_RANGES:
        if first <= value <= last:
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


def ipv6_unicast_problem(text):
    """Why `text` is not an IPv6 unicast address a host can be reached at, or None."""
    try:
        if not isinstance(text, str) or "%" in text or "/" in text:
            raise TypeError(text)
        address = IPAddress(text, 6, flags=0)
    except Exception:
        return "%s is not an IPv6 address" % json.dumps(text, default=str)[:80]
    for block, network in _IPV6_NOT_UNICAST_NETWORKS:
        if address in network:
            return "%s is not a unicast address (it is in %s)" % (text, block)
    return None


def _json_depth_exceeds(text, limit):
    """Whether JSON text nests objects/arrays deeper than `limit` (strings are skipped)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # no deeper than it has openings (a lease has two): no walk through the text
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


def _folded(data):
    return dict((str(key).lower(), value) for key, value in data.items())


def _vtep_mac(backend_data, field, required):
    """The VtepMAC of a BackendData (or BackendV6Data) object, lower-cased; None when absent and
    not `required`. ValueError names the field and the rule (a vxlan one, `required`, must be an
    object; other types' data may be anything)."""
    if backend_data is not None and not isinstance(backend_data, dict):
        if required or field != "BackendData":
            raise ValueError("lease %s is not a JSON object" % field)
        return None
    mac = _folded(backend_data).get("vtepmac") if backend_data else None
    if mac is None and not required:
        return None
    problem = unicast_mac_problem(mac)
    if problem:
        raise ValueError("lease %sVtepMAC: %s" % ("" if field == "BackendData" else field + " ", problem))
    return mac.lower()


def _vni(backend_data, field):
    """The VNI of a BackendData object (modern flanneld's vxlan writes one), or None when absent."""
    vni = _folded(backend_data).get("vni")
    if vni is not None and (isinstance(vni, bool) or not isinstance(vni, int) or not 0 <= vni < 2 ** 24):
        raise ValueError("lease %s VNI: %s is not a VNI (0 to 16777215)" % (field, json.dumps(vni)[:80]))
    return vni


class LeaseAttrs:
    """What a host publishes about itself: its public IP and backend data. `vtep_mac` is a vxlan
    lease's BackendData; `backend_data` any other type's, as decoded JSON (the extension backend's
    string, for one), None when the lease has none. `modern_format`: the value is modern
    flanneld's (v0.15+), with "PublicIPv6" (null without one) and the VNI in a vxlan BackendData
    (`vni`); `vtep_mac_v6` and `vni_v6` are its BackendV6Data. Without it, v0.10's format."""

    def __init__(self, public_ip, backend_type=None, vtep_mac=None, backend_data=None, public_ipv6=None,
                 vtep_mac_v6=None, vni_v6=None, modern_format=False, vni=None):
        self.public_ip = str(parsed_address(public_ip))
        self.backend_type = backend_type
        self.vtep_mac = vtep_mac
        self.backend_data = backend_data
        self.vni = vni
        self.public_ipv6 = str(IPAddress(public_ipv6, 6)) if public_ipv6 else None
        self.vtep_mac_v6 = vtep_mac_v6
        self.vni_v6 = vni_v6
        self.modern_format = modern_format or public_ipv6 is not None

    def to_json(self):
        """Byte-for-byte what flanneld's Go json.Marshal writes (field order, no spaces, UTF-8,
        and <, >, & and U+2028/9 escaped as Go escapes them): v0.10's fields, and modern
        flanneld's PublicIPv6 and BackendV6Data on a dual-stack lease."""
        data = {"PublicIP": self.public_ip}
        if self.modern_format:
            data["PublicIPv6"] = self.public_ipv6
        if self.backend_type and self.backend_type != "udp":  # flanneld's udp backend writes none
            data["BackendType"] = self.backend_type
        if self.vtep_mac:
            data["BackendData"] = {"VtepMAC": self.vtep_mac}
            if self.vni is not None:  # modern flanneld's vxlan value: the VNI first
                data["BackendData"] = {"VNI": self.vni, "VtepMAC": self.vtep_mac}
        elif self.backend_data is not None:
            data["BackendData"] = self.backend_data
        if self.vtep_mac_v6:
            data["BackendV6Data"] = {"VNI": self.vni_v6, "VtepMAC": self.vtep_mac_v6}
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return _GO_ESCAPES.sub(lambda match: "\\u%04x" % ord(match.group()), text)

    @classmethod
    def from_json(cls, text):
        """Parse and check a lease value as read from etcd; ValueError names the field and rule.

        Keys match case-insensitively, as Go's encoding/json does. A missing BackendType reads
        as "udp" (flanneld's udp backend writes none); a VtepMAC, where present, must be a
        unicast MAC, and a vxlan lease must have one. PublicIPv6, when not null, must be an IPv6
        unicast address; BackendV6Data's VNI an integer.
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
        fields = _folded(data)
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
        mac = _vtep_mac(backend_data, "BackendData", backend_type == "vxlan")
        vni = _vni(backend_data, "BackendData") if mac else None
        # Each backend checks the data it reads (extension: a string; wireguard: its key and port).
        other_data = backend_data if backend_type != "vxlan" else None
        public_ipv6 = fields.get("publicipv6")
        if public_ipv6 is not None:
            problem = ipv6_unicast_problem(public_ipv6)
            if problem:
                raise ValueError("lease PublicIPv6: %s" % problem)
        v6_data = fields.get("backendv6data")
        mac_v6 = _vtep_mac(v6_data, "BackendV6Data", False)
        vni_v6 = _vni(v6_data, "BackendV6Data") if mac_v6 else None
        if mac_v6 and vni_v6 is None:
            vni_v6 = 0  # Go reads a missing VNI as 0
        return cls(fields["publicip"], backend_type, mac, other_data, public_ipv6, mac_v6, vni_v6, "publicipv6" in fields,
                   vni)

    def __eq__(self, other):
        return isinstance(other, LeaseAttrs) and self.to_json() == other.to_json()

    def __ne__(self, other):
        return not self == other

    def __repr__(self):
        return "LeaseAttrs(%s)" % self.to_json()
