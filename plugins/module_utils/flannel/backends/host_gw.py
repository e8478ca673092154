"""The host-gw backend: one route per peer, `<peer subnet> via <peer PublicIP> dev <iface>`, and on
a dual-stack network `<peer IPv6 subnet> via <peer PublicIPv6> dev <iface>`.

Every host must be on one layer-2 network, and a host's PublicIP (PublicIPv6) must be its
interface's address (no NAT), as in flanneld. Unlike flanneld's 10 s route check, sync() also
removes routes of vanished peers (only routes inside the flannel networks, on the external
interface). A peer whose PublicIPv6 is missing or not on-link gets its IPv4 route only (said once).
"""

import errno

from .. import netlink
from ..lease import cidr
from .base import BackendError
from .peer_entries import PeerEntries
from .route_backend import RouteBackend

try:
    from netaddr import IPAddress
except ImportError:  # reported by the caller through missing_libraries()
    IPAddress = None


class HostGwBackend(RouteBackend):
    backend_type = "host-gw"

    def setup(self):
        """Check that host-gw can work here. Returns {"backend_type": "host-gw", "vtep_mac": None,
        "mtu": interface MTU, "changes": []} (and "public_ipv6" on a dual-stack network); raises
        BackendError when PublicIP (PublicIPv6) is not the interface's."""
        if not netlink.interface_has_address(self.public_ip, self.iface.index, self.ipr):
            raise BackendError(
                "your PublicIP %s differs from interface IP %s (%s), meaning that probably you're "
                "on a NAT, which is not supported by host-gw backend; use the vxlan backend or set "
                "--public-ip to an address of %s"
                % (self.public_ip, self.iface.address, self.iface.name, self.iface.name))
        info = {"backend_type": self.backend_type, "vtep_mac": None, "mtu": self.iface.mtu, "changes": []}
        if self.ipv6 is not None:
            info["public_ipv6"] = self.public_ipv6 = self._interface_public_ipv6()
        return info

    def _interface_public_ipv6(self):
        """The PublicIPv6 peers route this host's IPv6 subnet via: -public-ipv6, which must be an
        address of the interface, else the interface's first global IPv6 address."""
        found = netlink.interface_ipv6_addresses(self.iface.index, self.ipr)
        addresses = [str(IPAddress(address)) for address in found]
        if self.public_ipv6:
            if str(IPAddress(self.public_ipv6)) not in addresses:
                raise BackendError("EnableIPv6: -public-ipv6 %s is not an address of %s (it has %s), and host-gw "
                                   "peers route this host's IPv6 subnet via it; give one of its addresses"
                                   % (self.public_ipv6, self.iface.name, ", ".join(addresses) or "no global IPv6"))
            return str(IPAddress(self.public_ipv6))
        if not addresses:
            raise BackendError("EnableIPv6: the host-gw backend needs a global IPv6 address on %s (peers route "
                               "this host's IPv6 subnet via it) and %s has none; add one or turn EnableIPv6 off"
                               % (self.iface.name, self.iface.name))
        return addresses[0]

    def configure_lease(self, subnet):
        """host-gw has no device to address: only remember our subnet. Returns []."""
        self.subnet = cidr(subnet)
        return []

    def _entries_for(self, lease):
        subnet = cidr(lease.subnet)
        if lease.attrs.backend_type == "vxlan":
            return self._direct_entries(lease)
        if lease.attrs.backend_type != self.backend_type:
            self._warn_once((str(subnet), lease.attrs.backend_type),
                            "ignoring lease %s: backend type %s is not host-gw",
                            subnet, lease.attrs.backend_type)
            return None
        return PeerEntries(None, None, netlink.Route(str(subnet), lease.attrs.public_ip, self.iface.index, False),
                           None, None, self._direct_route6(lease))

    def _failure_hint(self, error):
        if netlink.is_errno(error, errno.ENETUNREACH):
            return " (the peer's PublicIP is not on-link: host-gw needs every host on one layer-2 network)"
        return ""
