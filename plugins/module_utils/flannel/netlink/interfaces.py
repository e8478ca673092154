"""The external interface's choice (as flanneld makes it), this host's IPv4 addresses, and the
VTEP MAC derived from the public IP."""

import collections
import errno
import hashlib
import re
import socket

from .. import netlink as package  # read through the package, where tests may put a fake kernel
from . import LINK_LOCAL, MAIN_TABLE, NO_INTERFACE_MESSAGE, RTMGRP_IPV4_IFADDR, Interface, InterfaceError, session

RTMGRP_IPV6_IFADDR = 0x100

try:
    from netaddr import IPAddress, IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    IPAddress = IPNetwork = None


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


def interface_addresses(index, ipr=None):
    """The IPv4 addresses of interface `index`, global ones before link-local ones (the order in
    which select_interface takes them)."""
    with session(ipr) as ipr:
        return list(_ipv4_addresses(ipr, index).get(index, []))


def local_ipv4_addresses(ipr=None):
    """Every IPv4 address of every interface, as a set of IPAddress."""
    with session(ipr) as ipr:
        return set(IPAddress(address) for addresses in _ipv4_addresses(ipr).values() for address in addresses)


def interface_ipv6_addresses(index, ipr=None):
    """The global IPv6 addresses of interface `index` (no link-local, tentative or deprecated one),
    in kernel order: the first is the one an IPv6 underlay uses."""
    with session(ipr) as ipr:
        return [msg.get_attr("IFA_ADDRESS") for msg in ipr.get_addr(family=socket.AF_INET6, index=index)
                if msg["scope"] == 0 and not (msg.get_attr("IFA_FLAGS") or msg["flags"]) & _UNUSABLE_IPV6]


_UNUSABLE_IPV6 = 0x40 | 0x20 | 0x08  # IFA_F_TENTATIVE, IFA_F_DEPRECATED, IFA_F_DADFAILED


def local_ipv6_addresses(ipr=None):
    """Every IPv6 address of every interface, as a set of IPAddress."""
    with session(ipr) as ipr:
        return set(IPAddress(msg.get_attr("IFA_ADDRESS")) for msg in ipr.get_addr(family=socket.AF_INET6))


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

    def __init__(self, ipr, listen, ipv6=False):
        self.ipr = ipr
        self.ipv6 = ipv6  # current() holds the IPv6 addresses too (a dual-stack backend's peer checks)
        self._addresses = self._prefixes = None
        self._announcements = None
        if listen:  # a plain socket: an announcement is only counted, never decoded
            self._announcements = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            self._announcements.bind((0, RTMGRP_IPV4_IFADDR | (RTMGRP_IPV6_IFADDR if ipv6 else 0)))
            self._announcements.setblocking(False)

    def current(self, reread=False):
        """The addresses as a set of IPAddress; `reread` forces a dump (resync, reconcile)."""
        self._forget_if_announced()  # before the dump: a change during it is seen next time
        if reread or self._addresses is None or self._announcements is None:
            self._addresses = package.local_ipv4_addresses(self.ipr)
            if self.ipv6:
                self._addresses |= package.local_ipv6_addresses(self.ipr)
        return self._addresses

    def prefixes(self):
        """The addresses with their prefix lengths (local_ipv4_prefixes), read the same way."""
        self._forget_if_announced()
        if self._prefixes is None or self._announcements is None:
            self._prefixes = package.local_ipv4_prefixes(self.ipr)
        return self._prefixes

    def _forget_if_announced(self):
        if self._drain():
            self._addresses = self._prefixes = None

    def _drain(self):
        if self._announcements is None:
            return False
        announced = False
        while True:
            try:
                self._announcements.recv(65536)
            except BlockingIOError:
                return announced
            except OSError as error:  # ENOBUFS: some were dropped, which is an announcement too
                if error.errno != errno.ENOBUFS:
                    raise
            announced = True

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
