"""The alloc backend, as flanneld v0.10's: a lease and subnet.env, no data plane.

The lease carries only the PublicIP (no BackendType, as upstream writes it) and subnet.env the
external interface's MTU. Nothing is programmed for the peers: whatever routes the subnets (a
cloud's route table, another tool) is someone else's; the agent only keeps the lease.
"""

from ..kernel_repairs import Owned
from ..lease import cidr
from .base import Backend


class AllocBackend(Backend):
    backend_type = "alloc"
    routes_ipv6 = True  # it routes neither family: an IPv6 subnet is leased like an IPv4 one

    def setup(self):
        """Nothing to start: {"backend_type": None (no BackendType in the lease), "vtep_mac": None,
        "mtu": the interface's, "changes": []}."""
        return {"backend_type": None, "vtep_mac": None, "mtu": self.iface.mtu, "changes": []}

    def configure_lease(self, subnet):
        self.subnet = cidr(subnet)
        return []

    def sync(self, peers):
        return []

    def add_peer(self, lease):
        return []

    def remove_peer(self, subnet):
        return []

    def owned(self):
        return Owned(None, None, None, None, None, frozenset(), {}, {}, {}, self.iface.index, self.iface.mtu)

    def restore(self, routes=(), neighbours=(), fdb=()):
        return []

    def device_replaced(self):
        return False

    def underlay_mtu_changed(self, mtu):
        """subnet.env's MTU is the interface's: returns (mtu, [])."""
        self.iface = self.iface._replace(mtu=mtu)
        return mtu, []

    def teardown(self, successor=None):
        return []
