"""What the backends whose one device carries the whole Network share (udp's flannel0,
wireguard's flannel-wg): the device's MTU and the Network's route through it."""

from .. import netlink
from ..changes import ROUTE, Change
from .base import Backend, mtu_change


class NetworkDeviceBackend(Backend):
    """A Backend with `device_name`, `device_index` and `mtu` set by the subclass."""

    mtu = None

    def _ensure_mtu(self):
        current = netlink.link_attributes(self.device_index, self.ipr)["mtu"]
        if current == self.mtu:
            return []
        return [mtu_change(self.device_index, self.device_name, self.mtu, current, self.ipr)]

    def _ensure_route(self):
        """The Network through the device (its address's prefix route may be it; added if removed)."""
        network = self.config.network
        if str(network) in netlink.link_route_destinations(self.device_index, self.ipr):
            return []
        netlink.replace_link_route(network, self.device_index, self.ipr)
        return [Change(ROUTE, "added", "route %s dev %s" % (network, self.device_name))]
