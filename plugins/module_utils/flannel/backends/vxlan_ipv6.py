"""The vxlan backend's IPv6 side on a dual-stack network (EnableIPv6), a mixin of VxlanBackend.

Which device carries a peer's IPv6 subnet, one rule for every pair of hosts:
- flannel-v6.<VNI>, upstream's device with IPv6 tunnel endpoints, when this host runs one (its
  external interface has a global IPv6 address: the device's local end; PublicIPv6 is -public-ipv6
  or that address) and the peer's lease has a PublicIPv6 and a BackendV6Data VtepMAC;
- else inside flannel.<VNI>, the IPv4 device: the kernel carries the IPv6 packet in the same
  IPv4 VXLAN frame, to the peer's IPv4 VtepMAC and PublicIP (the peer's IPv4 FDB entry is
  shared), which upstream cannot do. A host with no IPv6 underlay therefore still reaches every
  dual-stack peer, and an IPv6-underlay host reaches it back the same way.
Either way the peer's IPv6 gateway is the first address of its IPv6 subnet, as upstream's (the
IPv4 side's is its subnet's .0): an onlink route `<IPv6 subnet> via <first address>` on the
device and a permanent neighbour <first address> -> the VtepMAC; this host's device has its own
IPv6 subnet's first address as a /128 (the source of traffic this host sends into the overlay).
With DirectRouting, a peer whose PublicIPv6 is on-link gets a route via it instead.

A host running flannel-v6 writes the smaller of the two devices' MTUs to subnet.env (docker0
carries both families at one MTU); IPv6 over IPv6 costs 70 bytes of headers, 20 more than IPv4's.
"""

import socket

from .. import netlink
from ..changes import DEVICE, NEIGHBOUR, Change
from .base import address_change

try:
    from netaddr import IPAddress
except ImportError:  # reported by the caller through missing_libraries()
    IPAddress = None

VXLAN6_OVERHEAD = 70  # outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14


class VxlanIPv6:
    """Mixin of VxlanBackend (a RouteBackend): flannel-v6.<VNI>, the device's IPv6 address and the
    peers' IPv6 entries. Reads the backend's vni, wanted_device, iface, ipv6, subnet6, public_ipv6."""

    device6_name = None
    vtep_mac6 = None
    mtu6 = None

    def _setup_ipv6(self, info):
        """Create or reuse flannel-v6.<VNI> when the external interface has a global IPv6 address
        (else remove a stale one); adds "public_ipv6", "vtep_mac_v6" and the MTU to `info`.
        Returns the changes."""
        self.device6_name = "flannel-v6.%d" % self.vni
        underlay6 = netlink.interface_ipv6_addresses(self.iface.index, self.ipr)
        changes = []
        if not underlay6:
            changes.extend(self._remove_device6(None))
            self._warn_once("inside", "EnableIPv6: %s has no global IPv6 address: IPv6 is carried inside %s "
                            "(IPv4 underlay)", self.iface.name, self.device_name)
        else:
            self.public_ipv6 = str(IPAddress(self.public_ipv6 or underlay6[0]))
            self.vtep_mac6 = netlink.deterministic_vtep_mac(self.public_ipv6, self.vni)
            self.mtu6 = self.config.backend.mtu or self.iface.mtu - VXLAN6_OVERHEAD
            wanted = dict(self.wanted_device, local=underlay6[0])
            self.device6_index, created = self._ensure_device(self.device6_name, wanted, self.vtep_mac6,
                                                              self.mtu6, VXLAN6_OVERHEAD)
            changes.extend(created + self._ensure_device6_link())
            info["vtep_mac_v6"] = self.vtep_mac6
            info["mtu"] = min(info["mtu"], self.mtu6)
        info["public_ipv6"] = self.public_ipv6
        return changes

    def configure_ipv6_lease(self, ipv6_subnet):
        """This host's IPv6 subnet: its first address (/128) on the device that carries IPv6."""
        super().configure_ipv6_lease(ipv6_subnet)
        return self._ensure_ipv6_address()

    def _ensure_ipv6_address(self):
        if self.ipv6 is None or self.device_index is None:
            return []
        wanted = "%s/128" % self.subnet6.ip if self.subnet6 is not None else None
        network = self.ipv6.network
        changes = self._ensure_ipv6_on(self.device_name)
        if self.device6_index is None:
            return changes + self._ensure_address(wanted, network)
        return (changes + self._ensure_address(None, network) + self._ensure_device6_link() +
                self._ensure_address(wanted, network, self.device6_index, self.device6_name))

    def _ensure_ipv6_on(self, name):
        """IPv6 on for the device `name` (its sysctl), where the backend's socket is this namespace's."""
        if not self._own_ipr or not netlink.enable_ipv6(name):
            return []
        return [Change(DEVICE, "set", "%s ipv6 on" % name, "set %s ipv6 on (disable_ipv6 was 1)" % name)]

    def _ensure_device6_link(self):
        """flannel-v6.<VNI> up, with its MAC and MTU."""
        return (self._ensure_link_mac_and_mtu(self.device6_index, self.device6_name, self.vtep_mac6, self.mtu6,
                                              VXLAN6_OVERHEAD) +
                self._ensure_link_up(self.device6_index, self.device6_name) + self._ensure_ipv6_on(self.device6_name))

    def _device6_replaced(self):
        return self.device6_index is not None and netlink.link_index(self.device6_name, self.ipr) != self.device6_index

    def _remove_device6(self, successor):
        """Delete flannel-v6.<VNI> unless `successor` runs it (then only our old IPv6 address goes)."""
        name = self.device6_name or "flannel-v6.%d" % self.vni
        if getattr(successor, "device6_index", None) is not None and successor.device6_name == name:
            return self._remove_old_ipv6_address(successor, successor.device6_index, name)
        self.device6_index = None
        index = netlink.link_index(name, self.ipr)
        if index is None:
            return []
        netlink.delete_link(index, self.ipr)
        return [Change(DEVICE, "removed", name)]

    def _remove_old_ipv6_address(self, successor, index, name):
        """Our IPv6 address on a device the successor kept, when its subnet is not ours; and the
        peers' IPv6 neighbours there when the successor routes no IPv6 (IPv6 turned off)."""
        changes = []
        if self.ipv6 is not None and getattr(successor, "ipv6", None) is None:
            for ip, mac in sorted(netlink.permanent_neighbours(index, self.ipr, socket.AF_INET6).items()):
                self._try(changes, self._entry_change(NEIGHBOUR, "removed", (ip, mac)), netlink.delete_neighbour,
                          index, ip, self.ipr, missing_ok=True)
        if self.subnet6 is None or self.subnet6 == getattr(successor, "subnet6", None):
            return changes
        address = "%s/128" % self.subnet6.ip
        if address not in netlink.addresses_of(index, self.ipr, socket.AF_INET6):
            return changes
        netlink.delete_address(index, address, self.ipr)
        return changes + [address_change("removed old", address, name)]

    def _with_ipv6(self, lease, entries):
        """The peer's IPv4 `entries` with its IPv6 subnet's (see the module's rule), or as they are
        when it has no IPv6 subnet or IPv6 is off."""
        if self.ipv6 is None or lease.ipv6_subnet is None or entries is None:
            return entries
        attrs = lease.attrs
        direct = None
        if self.config.backend.direct_routing and attrs.public_ipv6:
            direct = self._direct_route(lease.ipv6_subnet.cidr, attrs.public_ipv6)
        return with_ipv6_entries(entries, lease.ipv6_subnet.cidr, attrs, self.device_index, self.device6_index,
                                 direct)


def with_ipv6_entries(entries, subnet6, attrs, device_index, device6_index, direct_route6=None):
    """A peer's IPv4 PeerEntries with those of its IPv6 subnet `subnet6` (the module's rule).

    Pure; the backend and netlab.flannel.overlay_info both use it. `attrs` has the lease's
    public_ip, vtep_mac, public_ipv6 and vtep_mac_v6; `device6_index` is flannel-v6.<VNI>'s, None
    when this host runs none; `direct_route6` the route via the peer's on-link PublicIPv6
    (DirectRouting), which is then its only IPv6 entry."""
    gateway6 = str(subnet6.ip)
    if direct_route6 is not None:
        return entries._replace(route6=direct_route6)
    if device6_index is not None and attrs.public_ipv6 and attrs.vtep_mac_v6:
        mac6 = attrs.vtep_mac_v6.lower()
        return entries._replace(neighbour6=(gateway6, mac6), fdb6=(mac6, attrs.public_ipv6),
                                route6=netlink.Route(str(subnet6), gateway6, device6_index, True))
    if not attrs.vtep_mac:  # a direct IPv4 route to a lease without VtepMAC: no VXLAN for IPv6 either
        return entries
    mac = attrs.vtep_mac.lower()
    return entries._replace(neighbour6=(gateway6, mac), fdb6=None if entries.fdb else (mac, attrs.public_ip),
                            route6=netlink.Route(str(subnet6), gateway6, device_index, True))
