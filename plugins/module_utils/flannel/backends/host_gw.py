"""The host-gw backend: one route per peer, `<peer subnet> via <peer PublicIP> dev <iface>`.

Every host must be on one layer-2 network, and a host's PublicIP must be its interface's
address (no NAT), as in flanneld. Unlike flanneld's 10 s route check, sync() also removes
routes of vanished peers (only routes inside the flannel network, on the external interface).
"""

import errno

from .. import netlink
from .base import BackendError, PeerEntries, RouteBackend

try:
    from netaddr import IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    IPNetwork = None


class HostGwBackend(RouteBackend):
    backend_type = "host-gw"

    def setup(self):
        """Check that host-gw can work here. Returns {"backend_type": "host-gw", "vtep_mac": None,
        "mtu": interface MTU, "changes": []}; raises BackendError when PublicIP is not local."""
        if not netlink.interface_has_address(self.public_ip, self.iface.index, self.ipr):
            raise BackendError(
                "your PublicIP %s differs from interface IP %s (%s), meaning that probably you're "
                "on a NAT, which is not supported by host-gw backend; use the vxlan backend or set "
                "--public-ip to an address of %s"
                % (self.public_ip, self.iface.address, self.iface.name, self.iface.name))
        return {"backend_type": self.backend_type, "vtep_mac": None, "mtu": self.iface.mtu,
                "changes": []}

    def configure_lease(self, subnet):
        """host-gw has no device to address: only remember our subnet. Returns []."""
        self.subnet = IPNetwork(str(subnet)).cidr
        return []

    def _entries_for(self, lease):
        subnet = IPNetwork(str(lease.subnet)).cidr
        if lease.attrs.backend_type == "vxlan":
            return self._direct_entries(lease)
        if lease.attrs.backend_type != self.backend_type:
            self._warn_once((str(subnet), lease.attrs.backend_type),
                            "ignoring lease %s: backend type %s is not host-gw",
                            subnet, lease.attrs.backend_type)
            return None
        return PeerEntries(None, None, netlink.Route(str(subnet), lease.attrs.public_ip,
                                                     self.iface.index, False))

    def _failure_hint(self, error):
        if netlink.is_errno(error, errno.ENETUNREACH):
            return " (the peer's PublicIP is not on-link: host-gw needs every host on one layer-2 network)"
        return ""
