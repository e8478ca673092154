"""Kernel networking state through netlink (pyroute2 only): interface choice and the primitives
the backends program routes, neighbours and FDB entries with.

Works with pyroute2 0.7.2 (Debian 12) and 0.9.x: only the common IPRoute calls are used and
messages are read with get_attr(). Every function takes an optional `ipr` (IPRoute or NetNS);
without one it opens and closes its own IPRoute.
"""

import collections
import errno
import functools
import hashlib
import inspect
import re
import select
import socket

try:
    from pyroute2 import IPRoute, NetlinkError
except ImportError:  # reported by the caller through missing_libraries()
    IPRoute = None
    NetlinkError = OSError

try:
    from netaddr import IPAddress, IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    IPAddress = IPNetwork = None

# Kernel constants, spelled out because pyroute2's module layout differs between versions.
AF_BRIDGE = 7
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
IFF_UP = 0x1
MAIN_TABLE = 254
RTPROT_KERNEL = 2
RTMGRP_IPV4_IFADDR = 0x10
LINK_LOCAL = "169.254.0.0/16"
TX_CSUM_FEATURE = "tx-checksum-ip-generic"

NO_INTERFACE_MESSAGE = "Failed to find interface to use that matches the interfaces and/or regexes provided"

Interface = collections.namedtuple("Interface", "name index address mtu")


class InterfaceError(Exception):
    """No usable external interface: the agent cannot start."""


class _Session:
    """The caller's ipr, or a private IPRoute closed on exit."""

    def __init__(self, ipr):
        self.given = ipr
        self.ipr = None

    def __enter__(self):
        self.ipr = self.given if self.given is not None else IPRoute()
        return self.ipr

    def __exit__(self, *exc):
        if self.given is None:
            self.ipr.close()


def session(ipr=None):
    """`with session(ipr) as ipr:` works whether or not the caller passed one."""
    return _Session(ipr)


def optional_ipr(function):
    """Let `function(..., ipr)` be called without ipr: it then gets a private IPRoute.
    The check is positional-or-keyword and cheap, since backends call these per event."""
    position = list(inspect.signature(function).parameters).index("ipr")

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if kwargs.get("ipr") is not None or (len(args) > position and args[position] is not None):
            return function(*args, **kwargs)
        with session(None) as ipr:
            if len(args) > position:
                args = args[:position] + (ipr,) + args[position + 1:]
            else:
                kwargs["ipr"] = ipr
            return function(*args, **kwargs)
    return wrapper


def is_errno(error, *codes):
    return isinstance(error, NetlinkError) and getattr(error, "code", None) in codes


# ---- interfaces -------------------------------------------------------------------------------

def _links(ipr):
    """index -> (name, mtu) for every link."""
    return dict((msg["index"], (msg.get_attr("IFLA_IFNAME"), msg.get_attr("IFLA_MTU")))
                for msg in ipr.get_links())


def _ipv4_addresses(ipr, index=None):
    """index -> [address, ...] in kernel order, global addresses before link-local ones."""
    found = collections.defaultdict(list)
    for msg in ipr.get_addr(family=socket.AF_INET):
        if index is None or msg["index"] == index:
            address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            found[msg["index"]].append(address)
    link_local = IPNetwork(LINK_LOCAL)
    for addresses in found.values():
        addresses.sort(key=lambda address: IPAddress(address) in link_local)  # stable sort
    return found


def _default_route_index(ipr):
    """The interface of the main table's default route (lowest metric wins), or None."""
    best = None
    for msg in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
        if msg["dst_len"] != 0 or not msg.get_attr("RTA_OIF"):
            continue
        metric = msg.get_attr("RTA_PRIORITY") or 0
        if best is None or metric < best[0]:
            best = (metric, msg.get_attr("RTA_OIF"))
    return best[1] if best else None


def _is_ip(text):
    try:
        return IPAddress(text, flags=0).version == 4
    except Exception:
        return False


def select_interface(ifaces=(), iface_regexes=(), ipr=None):
    """Choose the external interface as flanneld does; returns Interface(name, index, address, mtu).

    `ifaces` (IPs or names) are tried in order, then `iface_regexes` (each matched against every
    interface's IPv4 addresses first, then against the names). With neither, the interface of the
    default route. The address is the given IP, else the first global IPv4 address, else a
    link-local one. Raises InterfaceError.
    """
    with session(ipr) as ipr:
        links = _links(ipr)
        addresses = _ipv4_addresses(ipr)

        def chosen(index, address=None):
            if address is None:
                if not addresses.get(index):
                    raise InterfaceError("failed to find IPv4 address for interface %s" % links[index][0])
                address = addresses[index][0]
            name, mtu = links[index]
            return Interface(name, index, address, mtu)

        for wanted in ifaces:
            if _is_ip(wanted):
                for index in sorted(addresses):
                    if str(IPAddress(wanted)) in addresses[index]:
                        return chosen(index, str(IPAddress(wanted)))
            else:
                for index, (name, _mtu) in sorted(links.items()):
                    if name == wanted:
                        return chosen(index)
        for pattern in iface_regexes:
            regex = re.compile(pattern)
            for index in sorted(addresses):
                for address in addresses[index]:
                    if regex.search(address):
                        return chosen(index, address)
            for index, (name, _mtu) in sorted(links.items()):
                if regex.search(name) and addresses.get(index):
                    return chosen(index)
        if ifaces or iface_regexes:
            given = ["-iface %s" % value for value in ifaces] + ["-iface-regex %s" % value for value in iface_regexes]
            present = ["%s %s" % (name, " ".join(addresses.get(index, [])) or "(no IPv4 address)")
                       for index, (name, _mtu) in sorted(links.items())]
            raise InterfaceError("%s (%s; this host has: %s)"
                                 % (NO_INTERFACE_MESSAGE, ", ".join(given), ", ".join(present)))
        index = _default_route_index(ipr)
        if index is None:
            raise InterfaceError("failed to get default interface: no default route; "
                                 "give --iface or --iface-regex")
        return chosen(index)


def local_ipv4_addresses(ipr=None):
    """Every IPv4 address of every interface, as a set of IPAddress."""
    with session(ipr) as ipr:
        return set(IPAddress(address) for addresses in _ipv4_addresses(ipr).values() for address in addresses)


def local_ipv4_prefixes(ipr=None):
    """Every IPv4 address of every interface with its prefix length (the prefixes this host is
    on-link with), as a set of IPNetwork such as 172.31.250.11/24."""
    with session(ipr) as ipr:
        return set(IPNetwork("%s/%d" % (msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS"), msg["prefixlen"]))
                   for msg in ipr.get_addr(family=socket.AF_INET))


class LocalAddresses:
    """This host's IPv4 addresses (and their prefixes) for the per-event peer checks, re-read
    only when the kernel announces an address change (a dump per lease event cost a quarter of
    the agent's CPU per event). With a caller's ipr, which may be another namespace, no
    announcement can be heard for it, so every call re-reads."""

    def __init__(self, ipr, listen):
        self.ipr = ipr
        self._addresses = self._prefixes = None
        self._announcements = None
        if listen:
            self._announcements = IPRoute()
            self._announcements.bind(groups=RTMGRP_IPV4_IFADDR)

    def current(self, reread=False):
        """The addresses as a set of IPAddress; `reread` forces a dump (resync, reconcile)."""
        self._forget_if_announced()  # before the dump: a change during it is seen next time
        if reread or self._addresses is None or self._announcements is None:
            self._addresses = local_ipv4_addresses(self.ipr)
        return self._addresses

    def prefixes(self):
        """The addresses with their prefix lengths (local_ipv4_prefixes), read the same way."""
        self._forget_if_announced()
        if self._prefixes is None or self._announcements is None:
            self._prefixes = local_ipv4_prefixes(self.ipr)
        return self._prefixes

    def _forget_if_announced(self):
        if self._drain():
            self._addresses = self._prefixes = None

    def _drain(self):
        if self._announcements is None:
            return False
        announced = False
        while select.select([self._announcements.fileno()], [], [], 0)[0]:
            self._announcements.get()
            announced = True
        return announced

    def close(self):
        if self._announcements is not None:
            self._announcements.close()


def interface_has_address(ip, index=None, ipr=None):
    """Whether `ip` is an IPv4 address of interface `index` (of any interface when None)."""
    with session(ipr) as ipr:
        wanted = str(IPAddress(ip))
        return any(wanted in found for found in _ipv4_addresses(ipr, index).values())


def deterministic_vtep_mac(public_ip, vni):
    """A stable VTEP MAC for (public IP, VNI): the same after reboots and device re-creation,
    so peers' neighbour and FDB entries stay valid. Locally administered, unicast."""
    digest = bytearray(hashlib.sha256(("flannel-vtep/%s/%d" % (IPAddress(public_ip), int(vni)))
                                      .encode("ascii")).digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02  # clear multicast bit, set locally-administered bit
    return ":".join("%02x" % byte for byte in digest)


# ---- links and addresses ----------------------------------------------------------------------

@optional_ipr
def link_index(name, ipr=None):
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


@optional_ipr
def link_attributes(index, ipr=None):
    """A JSON-able dict of a link, with the vxlan options when it is a vxlan device."""
    msg = ipr.get_links(index)[0]
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    attrs = {"name": msg.get_attr("IFLA_IFNAME"), "index": index, "kind": kind,
             "mtu": msg.get_attr("IFLA_MTU"), "mac": msg.get_attr("IFLA_ADDRESS"),
             "state": "up" if msg["flags"] & IFF_UP else "down",
             "operstate": msg.get_attr("IFLA_OPERSTATE")}
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    if kind == "vxlan" and data is not None:
        link = data.get_attr("IFLA_VXLAN_LINK")
        attrs.update({"vni": data.get_attr("IFLA_VXLAN_ID"), "local": data.get_attr("IFLA_VXLAN_LOCAL"),
                      "port": data.get_attr("IFLA_VXLAN_PORT"),
                      "learning": bool(data.get_attr("IFLA_VXLAN_LEARNING")),
                      "gbp": bool(data.get_attr("IFLA_VXLAN_GBP")),
                      "link_index": link,
                      "link_name": _links(ipr).get(link, (None, None))[0] if link else None})
    return attrs


@optional_ipr
def create_vxlan(name, vni, local, link, port, gbp, mac, mtu, ipr=None):
    """Create a learning-off vxlan device (down); returns its index."""
    options = dict(ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local, vxlan_link=link,
                   vxlan_port=port, vxlan_learning=0, address=mac, mtu=mtu)
    if gbp:
        options["vxlan_gbp"] = True  # a flag attribute: present means on
    ipr.link("add", **options)
    return link_index(name, ipr)


@optional_ipr
def addresses_of(index, ipr=None):
    """The IPv4 addresses of a link as 'a.b.c.d/len' strings."""
    return ["%s/%d" % (msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS"), msg["prefixlen"])
            for msg in ipr.get_addr(family=socket.AF_INET, index=index)]


# ---- neighbours, FDB, routes ------------------------------------------------------------------

@optional_ipr
def permanent_neighbours(index, ipr=None):
    """ip -> mac of the permanent IPv4 neighbours on a link."""
    return dict((msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR"))
                for msg in ipr.get_neighbours(family=socket.AF_INET, ifindex=index)
                if msg["ifindex"] == index and msg["state"] & NUD_PERMANENT)


@optional_ipr
def replace_neighbour(index, ip, mac, ipr=None):
    ipr.neigh("replace", ifindex=index, dst=ip, lladdr=mac, state=NUD_PERMANENT)


@optional_ipr
def delete_neighbour(index, ip, ipr=None):
    ipr.neigh("del", ifindex=index, dst=ip)


@optional_ipr
def fdb_entries(index, ipr=None):
    """(mac, dst) pairs of the link's own (self) FDB entries that have a remote dst."""
    return [(msg.get_attr("NDA_LLADDR"), msg.get_attr("NDA_DST"))
            for msg in ipr.get_neighbours(family=AF_BRIDGE, ifindex=index)
            if msg["ifindex"] == index and msg.get_attr("NDA_DST")]


@optional_ipr
def replace_fdb(index, mac, dst, ipr=None):
    ipr.fdb("replace", ifindex=index, lladdr=mac, dst=dst, state=NUD_PERMANENT, flags=NTF_SELF)


@optional_ipr
def delete_fdb(index, mac, dst, ipr=None):
    ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst, flags=NTF_SELF)


Route = collections.namedtuple("Route", "dst gateway index onlink")


@optional_ipr
def routes_via(index, ipr=None, inside=None):
    """Main-table IPv4 unicast routes out of link `index` (not the kernel's own), as Route tuples;
    with `inside` (an IPNetwork), only those whose destination lies in it."""
    found = []
    for msg in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
        if msg.get_attr("RTA_OIF") != index or msg["proto"] == RTPROT_KERNEL:
            continue
        if (msg.get_attr("RTA_TABLE") or msg["table"]) != MAIN_TABLE:
            continue
        dst = IPNetwork("%s/%d" % (msg.get_attr("RTA_DST") or "0.0.0.0", msg["dst_len"]))
        if inside is not None and dst not in inside:
            continue
        found.append(Route(str(dst), msg.get_attr("RTA_GATEWAY"), index,
                           bool(msg["flags"] & RTNH_F_ONLINK)))
    return found


@optional_ipr
def link_route_destinations(index, ipr=None):
    """'a.b.c.d/len' of every main-table IPv4 route out of link `index`, the kernel's own included."""
    return set("%s/%d" % (msg.get_attr("RTA_DST") or "0.0.0.0", msg["dst_len"])
               for msg in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE)
               if msg.get_attr("RTA_OIF") == index and (msg.get_attr("RTA_TABLE") or msg["table"]) == MAIN_TABLE)


@optional_ipr
def replace_route(route, ipr=None):
    dst = IPNetwork(route.dst)
    ipr.route("replace", dst=str(dst.ip), dst_len=dst.prefixlen, gateway=route.gateway,
              oif=route.index, table=MAIN_TABLE, flags=RTNH_F_ONLINK if route.onlink else 0)


@optional_ipr
def delete_route(route, ipr=None):
    dst = IPNetwork(route.dst)
    ipr.route("del", dst=str(dst.ip), dst_len=dst.prefixlen, gateway=route.gateway,
              oif=route.index, table=MAIN_TABLE)


@optional_ipr
def direct_route(ip, ipr=None):
    """The outgoing link index when `ip` is reachable without a gateway (on-link), else None."""
    try:
        found = list(ipr.route("get", dst=str(ip)))
    except NetlinkError as error:
        if is_errno(error, errno.ENETUNREACH, errno.EHOSTUNREACH):
            return None
        raise
    if len(found) == 1 and not found[0].get_attr("RTA_GATEWAY"):
        return found[0].get_attr("RTA_OIF")
    return None


def format_route(route, name=None):
    text = "route %s via %s dev %s" % (route.dst, route.gateway, name or route.index)
    return text + " onlink" if route.onlink else text


def set_tx_checksum_offload(ifname, enabled):
    """Turn tx-checksum-ip-generic on or off for a device of the CURRENT namespace. Only that
    feature is written, so the kernel brings back the segmentation offloads that depend on it
    when it is turned on again. Returns True when it changed something."""
    from pyroute2.ethtool import Ethtool  # imported here: only the agent needs it

    ethtool = Ethtool()
    try:
        features = ethtool.get_features(ifname)
        feature = features.features.get(TX_CSUM_FEATURE)
        if feature is None or bool(feature.enable) == bool(enabled):
            return False
        feature.enable = bool(enabled)
        ethtool.set_features(ifname, features)
        return True
    finally:
        ethtool.close()


# ---- read-only view for overlay_info ----------------------------------------------------------

def overlay_state(device, ipr=None):
    """What the kernel holds for a vxlan overlay. `device` is a VNI (int) or a device name.

    Returns {"name", "exists", "device": link_attributes(..) + "addresses" or None,
    "routes": [{"dst", "gateway", "onlink"}], "neighbours": [{"ip", "mac"}],
    "fdb": [{"mac", "dst"}]}, all sorted, JSON-able.
    """
    name = "flannel.%d" % device if isinstance(device, int) else str(device)
    state = {"name": name, "exists": False, "device": None, "routes": [], "neighbours": [], "fdb": []}
    with session(ipr) as ipr:
        index = link_index(name, ipr)
        if index is None:
            return state
        device_attrs = link_attributes(index, ipr)
        device_attrs["addresses"] = sorted(addresses_of(index, ipr))
        state.update(exists=True, device=device_attrs)
        state["routes"] = sorted(({"dst": r.dst, "gateway": r.gateway, "onlink": r.onlink}
                                  for r in routes_via(index, ipr)), key=lambda r: IPNetwork(r["dst"]))
        state["neighbours"] = [{"ip": ip, "mac": mac} for ip, mac in
                               sorted(permanent_neighbours(index, ipr).items(),
                                      key=lambda item: IPAddress(item[0]))]
        state["fdb"] = [{"mac": mac, "dst": dst} for mac, dst in sorted(fdb_entries(index, ipr))]
    return state
