"""The vxlan backend (flanneld v0.9+ static programming), with these fixes over upstream:
- a VTEP MAC derived from the public IP and VNI: upstream's changes at every reboot or device
  re-creation and leaves peers with stale neighbour and FDB entries;
- the MTU set on the device (Backend.MTU or the interface's less the VXLAN overhead): upstream's
  cannot be chosen and is wrong on jumbo or small underlays;
- only addresses inside the flannel network replaced on the device: upstream crash-loops on
  "link has incompatible addresses" when dhcpcd or APIPA put one there;
- stale neighbour/FDB/route entries removed and a deleted device recreated: upstream never
  restores what a NIC flap or network restart removed;
- tx checksum offload chosen per kernel (see decide_offload).
"""

import errno
import os
import re

from .. import netlink
from ..changes import DEVICE, Change
from ..lease import cidr, unicast_mac_problem
from .base import BackendError, address_change, mtu_change
from .peer_entries import PeerEntries, Programmed
from .route_backend import RouteBackend
from .vxlan_ipv6 import VXLAN6_OVERHEAD, VxlanIPv6

VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
OFFLOAD_CHOICES = ("auto", "on", "off")
# Kernels before 5.7 send VXLAN packets with a wrong UDP checksum when NAT with --random-fully
# rewrites their source port after the checksum was offloaded; 5.7 fixed it.
OFFLOAD_FIXED_IN = (5, 7)


def kernel_version(release=None):
    """(major, minor) of a kernel release string such as '6.18.44-fc', or None if unreadable."""
    match = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    return (int(match.group(1)), int(match.group(2))) if match else None


def decide_offload(choice, release=None):
    """(enabled, reason) for tx checksum offload on the vxlan device.

    `auto` keeps the kernel's default (on) and turns it off only where the checksum bug exists
    (kernels before 5.7); `on` and `off` are the operator's word."""
    if choice not in OFFLOAD_CHOICES:
        raise ValueError("vxlan offload must be one of %s, got %r" % (", ".join(OFFLOAD_CHOICES), choice))
    if choice != "auto":
        return choice == "on", "set by -vxlan-offload=%s" % choice
    version = kernel_version(release)
    shown = release if release is not None else os.uname().release
    if version is None:
        return True, "auto: kernel release %r unreadable, keeping the kernel's default" % shown
    if version < OFFLOAD_FIXED_IN:
        return False, ("auto: kernel %s is older than 5.7, whose VXLAN checksums break under NAT "
                       "with --random-fully" % shown)
    return True, "auto: kernel %s is 5.7 or newer, keeping the kernel's default" % shown


def peer_entries(subnet, public_ip, vtep_mac, direct_routing, device_index, onlink_index=None):
    """The kernel entries one vxlan peer's lease needs: PeerEntries, or None when it needs VXLAN
    entries but has no VtepMAC or one that is not a unicast MAC (lease.unicast_mac_problem).

    Pure; the backend and netlab.flannel.overlay_info both use it, so the check can never expect
    other entries than the agent programs. With `direct_routing` (Backend.DirectRouting) and the
    peer's public IP directly reachable on link `onlink_index` (netlink.direct_route), the peer
    gets only a route via its public IP on that link. Otherwise a permanent neighbour
    (<subnet address>, VtepMAC) and an FDB entry (VtepMAC, public IP) on the device
    `device_index`, and an onlink route via <subnet address> through the device.
    """
    subnet = cidr(subnet)
    if direct_routing and onlink_index is not None:
        return PeerEntries(None, None, netlink.Route(str(subnet), public_ip, onlink_index, False))
    if not vtep_mac or unicast_mac_problem(vtep_mac):
        return None
    mac = vtep_mac.lower()
    gateway = str(subnet.ip)
    return PeerEntries((gateway, mac), (mac, public_ip), netlink.Route(str(subnet), gateway, device_index, True))


class VxlanBackend(VxlanIPv6, RouteBackend):
    backend_type = "vxlan"

    def __init__(self, config, iface, public_ip, ipr=None, offload="auto"):
        super().__init__(config, iface, public_ip, ipr)
        self.offload, self.offload_reason = decide_offload(offload)
        backend = config.backend
        self.vni = backend.vni
        self.device_name = "flannel.%d" % self.vni
        self.vtep_mac = netlink.deterministic_vtep_mac(self.public_ip, self.vni)
        self.mtu = backend.mtu or self.iface.mtu - VXLAN_OVERHEAD
        self.wanted_device = {"kind": "vxlan", "vni": self.vni, "local": self.iface.address,
                              "link_index": self.iface.index, "port": backend.dst_port,
                              "learning": False, "gbp": bool(backend.gbp)}

    @classmethod
    def create(cls, config, iface, public_ip, flags):
        backend = cls(config, iface, public_ip, offload=flags.vxlan_offload)
        backend.public_ipv6 = getattr(flags, "public_ipv6", None) or None
        backend.log.info("tx checksum offload on %s: %s (%s)", backend.device_name,
                         "on" if backend.offload else "off", backend.offload_reason)
        return backend

    def setup(self):
        """Create or reuse flannel.<VNI> with the deterministic MAC and the MTU.

        Returns {"backend_type": "vxlan", "vtep_mac", "mtu", "changes": [..]}: what the lease
        must publish, and what was done to the kernel; on a dual-stack network also "public_ipv6"
        and, with an IPv6 underlay, "vtep_mac_v6" (flannel-v6.<VNI>: vxlan_ipv6.py).
        """
        index, changes = self._ensure_device(self.device_name, self.wanted_device, self.vtep_mac, self.mtu,
                                             VXLAN_OVERHEAD)
        self.device_index = index
        changes.extend(self._ensure_mac_and_mtu())
        changes.extend(self._ensure_offload())
        info = {"backend_type": self.backend_type, "vtep_mac": self.vtep_mac, "mtu": self.mtu, "changes": changes}
        if self.ipv6 is not None:
            changes.extend(self._setup_ipv6(info))
        return info

    def _ensure_device(self, name, wanted, mac, mtu, overhead):
        """Create the vxlan device `name` with the options `wanted`, or reuse it when it has them
        (recreated when not); `overhead`: its encapsulation's bytes. Returns (its index, changes)."""
        changes = []
        index = netlink.link_index(name, self.ipr)
        if index is not None:
            current = netlink.link_attributes(index, self.ipr)
            differences = ["%s %s, want %s" % (key, current.get(key), value)
                           for key, value in sorted(wanted.items()) if current.get(key) != value]
            if differences:
                self.log.warning("%s has an incompatible configuration (%s); recreating device",
                                 name, "; ".join(differences))
                netlink.delete_link(index, self.ipr)
                changes.append(Change(DEVICE, "removed", name, "removed incompatible %s (%s)"
                                      % (name, "; ".join(differences))))
                index = None
        if index is None:
            try:
                index = netlink.create_vxlan(name, self.vni, wanted["local"], self.iface.index, wanted["port"],
                                             wanted["gbp"], mac, mtu, self.ipr)
            except netlink.NetlinkError as error:
                raise self._refusal("create %s" % name, error, name, mtu, overhead)
            changes.append(Change(DEVICE, "created", name,
                                  "created %s (vni %d, local %s, dev %s, dstport %d, nolearning%s)"
                                  % (name, self.vni, wanted["local"], self.iface.name,
                                     wanted["port"], ", gbp" if wanted["gbp"] else "")))
        return index, changes

    def configure_lease(self, subnet):
        """Give the device <subnet>.0/32 and bring it up. Other addresses inside the flannel
        network (an old lease) are removed; foreign ones (dhcpcd, APIPA) are kept. Returns changes."""
        if self.device_index is None:
            raise BackendError("configure_lease() called before setup()")
        self.subnet = cidr(subnet)
        changes = self._ensure_address("%s/32" % self.subnet.ip) + self._ensure_up()
        # Something (systemd's MACAddressPolicy, #1155) may rewrite the MAC when the link appears.
        changes.extend(self._ensure_mac_and_mtu())
        return changes + (self._ensure_ipv6_address() if self.subnet6 is not None else [])

    def sync(self, peers):
        """Repair the device first (deleted, down, address or MAC lost, as after a network
        restart), then the peers' entries (see RouteBackend.sync). Returns the changes."""
        changes = self._repair_device()
        return changes + super().sync(peers)

    def _remove_device(self, successor):
        changes = self._remove_device6(successor) if self.device6_name else []
        if isinstance(successor, VxlanBackend) and successor.device_name == self.device_name:
            # The successor kept (or re-created) flannel.<VNI>: only our address may be left,
            # when the lease moved out of a Network the successor no longer knows.
            return changes + self._remove_old_address(successor) + \
                self._remove_old_ipv6_address(successor, successor.device_index, self.device_name)
        index = netlink.link_index(self.device_name, self.ipr)
        if index is None:
            return changes
        # Its address, neighbours, FDB entries and routes go with it.
        netlink.delete_link(index, self.ipr)
        return changes + [Change(DEVICE, "removed", self.device_name)]

    def _remove_old_address(self, successor):
        if self.subnet is None or self.subnet == successor.subnet:
            return []
        address = "%s/32" % self.subnet.ip
        index = netlink.link_index(self.device_name, self.ipr)
        if index is None or address not in netlink.addresses_of(index, self.ipr):
            return []
        netlink.delete_address(index, address, self.ipr)
        return [address_change("removed old", address, self.device_name)]

    # -- internals -------------------------------------------------------------------------------

    def _repair_device(self):
        if self.subnet is None:  # before configure_lease(): nothing to compare with yet
            return []
        if netlink.link_index(self.device_name, self.ipr) != self.device_index or self._device6_replaced():
            self.log.warning("%s disappeared or was replaced; recreating it",
                             self.device6_name if self._device6_replaced() else self.device_name)
            self._programmed = Programmed()  # its neighbours, FDB entries and routes went with it
            return self.setup()["changes"] + self.configure_lease(self.subnet)
        return self.configure_lease(self.subnet) + self._ensure_offload()

    def _ensure_offload(self):
        """Hold tx checksum offload in the chosen state (after creation and at every reconcile)."""
        # ethtool acts on the current namespace only: with a caller's ipr (maybe a NetNS) the
        # device may live elsewhere, so only the backend's own IPRoute implies it is here.
        if not self._own_ipr:
            return []
        state = "on" if self.offload else "off"
        try:
            if netlink.set_tx_checksum_offload(self.device_name, self.offload):
                return [Change(DEVICE, "set", "%s %s %s" % (self.device_name, netlink.TX_CSUM_FEATURE, state))]
        except Exception as error:  # a driver without the ioctl: the overlay still works
            self._warn_once(("offload", state), "cannot set %s %s on %s: %s",
                            netlink.TX_CSUM_FEATURE, state, self.device_name, error)
        return []

    def _ensure_mac_and_mtu(self):
        return self._ensure_link_mac_and_mtu(self.device_index, self.device_name, self.vtep_mac, self.mtu,
                                             VXLAN_OVERHEAD)

    def _ensure_link_mac_and_mtu(self, index, name, mac, mtu, overhead):
        """The vxlan device `name` (flannel.<VNI> or flannel-v6.<VNI>) given its MAC and MTU."""
        current = netlink.link_attributes(index, self.ipr)
        changes = []
        if current["mac"] != mac:
            netlink.set_link_mac(index, mac, self.ipr)
            changes.append(Change(DEVICE, "set", "%s mac %s" % (name, mac),
                                  "set %s mac %s (was %s)" % (name, mac, current["mac"])))
        if current["mtu"] != mtu:
            try:
                changes.append(mtu_change(index, name, mtu, current["mtu"], self.ipr))
            except netlink.NetlinkError as error:
                raise self._refusal("set %s mtu %d" % (name, mtu), error, name, mtu, overhead)
        return changes

    def _refusal(self, action, error, name, mtu, overhead):
        """A BackendError naming what the kernel refused and the values involved (the device
        `name`, its `mtu`, its vxlan `overhead`), not an errno."""
        if netlink.is_errno(error, errno.EINVAL):
            why = "a vxlan device's MTU can be at most its parent's less %d" % overhead
        else:
            why = getattr(error, "args", (str(error),))[-1]
        return BackendError("the kernel refused to %s: %s (device %s MTU %d, parent %s MTU %d, Backend.MTU %s)"
                            % (action, why, name, mtu, self.iface.name, self.iface.mtu,
                               self.config.backend.mtu or "unset"))

    def owned(self):
        owned = super().owned()
        address = str(self.subnet.ip) if self.subnet is not None else None
        return owned._replace(device_name=self.device_name, device_mtu=self.mtu, device_mac=self.vtep_mac,
                              device_address=address, device6_index=self.device6_index,
                              device6_name=self.device6_name if self.device6_index is not None else None,
                              device_address6=str(self.subnet6.ip) if self.subnet6 is not None else None)

    def device_replaced(self):
        return super().device_replaced() or self._device6_replaced()

    def underlay_mtu_changed(self, mtu):
        """Follow the external interface's MTU: the device's becomes `mtu` less the VXLAN
        overhead, unless Backend.MTU sets it. Returns (the device's MTU, changes)."""
        self.iface = self.iface._replace(mtu=mtu)
        if not self.config.backend.mtu:
            self.mtu = mtu - VXLAN_OVERHEAD
        changes = self._ensure_mac_and_mtu()
        if self.device6_index is None:
            return self.mtu, changes
        self.mtu6 = self.config.backend.mtu or mtu - VXLAN6_OVERHEAD
        return min(self.mtu, self.mtu6), changes + self._ensure_device6_link()

    def _link_names(self):
        return {self.iface.index: self.iface.name, self.device_index: self.device_name,
                self.device6_index: self.device6_name}

    def _route_links(self):
        # Direct routes (DirectRouting) leave by the external interface; the rest by the device(s).
        return [self.device_index, self.iface.index] + ([self.device6_index] if self.device6_index is not None else [])

    def _entries_for(self, lease):
        subnet = cidr(lease.subnet)
        attrs = lease.attrs
        if attrs.backend_type == "host-gw":
            return self._direct_entries(lease)
        if attrs.backend_type != self.backend_type:
            self._warn_once((str(subnet), attrs.backend_type),
                            "ignoring lease %s: backend type %s is not vxlan", subnet, attrs.backend_type)
            return None
        direct_routing = self.config.backend.direct_routing
        onlink_index = netlink.direct_route(attrs.public_ip, self.ipr) if direct_routing else None
        entries = peer_entries(subnet, attrs.public_ip, attrs.vtep_mac, direct_routing, self.device_index,
                               onlink_index)
        if entries is None:
            problem = unicast_mac_problem(attrs.vtep_mac) if attrs.vtep_mac else None
            if problem:
                self._warn_once((str(subnet), attrs.vtep_mac), "ignoring lease %s: VtepMAC %s", subnet, problem)
            else:
                self._warn_once((str(subnet), None), "ignoring lease %s: it has no VtepMAC", subnet)
        return self._with_ipv6(lease, entries)
