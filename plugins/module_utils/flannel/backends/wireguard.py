"""The wireguard backend, as flannel's (v0.16 onwards, IPv4): every packet between hosts is
encrypted by WireGuard on the device `flannel-wg`.

The device holds the lease's first address (/32) and the whole Network is routed through it; each
peer is a WireGuard peer with its lease's PublicKey, endpoint PublicIP:Port and, as allowed IPs,
its subnet. The lease's BackendData is {"PublicKey": .., "Port": ..}; FLANNEL_MTU is the underlay
MTU (or Backend.MTU) less 80 bytes (outer IPv4 20, UDP 8, WireGuard 32, and room for IPv6's 20).

The device is the kernel's where it has the wireguard module, otherwise wireguard-go's (a TUN
device run by that program); both are configured the same way (wireguard_device.py). The data
plane outlives the agent: a restarted agent finds the device, its peers and the same private key
(kept in a file) and changes nothing, so its peers notice nothing.

Of each pair of hosts, the one whose public key sorts first opens the session as soon as it
programs the peer (and again while the device reports no handshake with it): WireGuard starts a
handshake at a peer's first packet, and when both ends send their first packets at the same moment
(verify.yml pings both ways at once) the two handshakes cross, each end drops the answer to its
own, and both wait WireGuard's 5 s retry with their packets held. One end opening first avoids it.
The same end opens it again before it expires while idle (wireguard_sessions.py): the agent's loop
runs upkeep() when upkeep_in() says.
"""

import os

from .. import netlink
from ..changes import DEVICE, PEER, Change
from ..kernel_repairs import Owned
from ..lease import cidr
from ..netlink.wireguard import KernelDevice, create_wireguard
from .base import BackendError, address_change, peer_scope_problem
from .network_device import NetworkDeviceBackend
from .wireguard_device import DeviceError, UapiDevice, WgPeer, is_missing_kind, start_wireguard_go
from .wireguard_sessions import RETRY_AFTER, SessionTimer
from .wireguard_keys import KeyFileError, key_problem, lease_key_and_port, load_or_create_private_key, public_key

DEVICE_NAME = "flannel-wg"
WIREGUARD_OVERHEAD = 80
# Upstream's place and variable: the key lives as long as the boot, as the device does (see
# docs/architecture.md, "The wireguard backend's key").
DEFAULT_KEY_FILE = "/run/flannel/wgkey"
KEY_FILE_VARIABLE = "WIREGUARD_KEY_FILE"


def peer_data_problem(attrs):
    """Why a wireguard lease's BackendData cannot make a peer, or None."""
    key, port = lease_key_and_port(attrs.backend_data)
    problem = key_problem(key)
    if problem:
        return "PublicKey: " + problem
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return "Port: %r is not a UDP port (1 to 65535)" % (port,)
    return None


class WireguardBackend(NetworkDeviceBackend):
    backend_type = "wireguard"

    def __init__(self, config, iface, public_ip, ipr=None, key_file=None):
        super().__init__(config, iface, public_ip, ipr)
        self.device_name = DEVICE_NAME
        self.port = config.backend.listen_port
        self.mtu = (config.backend.mtu or self.iface.mtu) - WIREGUARD_OVERHEAD
        self.key_file = key_file or os.environ.get(KEY_FILE_VARIABLE) or DEFAULT_KEY_FILE
        self.private_key = None
        self.public_key = None
        self.device = None  # UapiDevice or KernelDevice, chosen by setup()
        self._peers = {}  # subnet (str) -> WgPeer last configured
        self._sessions = SessionTimer()  # when this end opens its sessions again
        self._silent = set()  # public keys said to answer no opening (said once until they answer)

    # -- set-up ----------------------------------------------------------------------------------

    def setup(self):
        """Load (or create) the key, find or make the device, set its key, port and MTU.
        Returns {"backend_type": "wireguard", "vtep_mac": None, "backend_data", "mtu", "changes"}."""
        try:
            self.private_key, created = load_or_create_private_key(self.key_file)
        except KeyFileError as error:
            raise BackendError(str(error))
        self.public_key = public_key(self.private_key)
        self.log.info("wireguard: %s private key %s (public key %s)", "created" if created else "using the",
                      self.key_file, self.public_key)
        changes = self._open_device()
        try:
            state = self.device.state()
            self.device.configure(self.private_key if state.private_key != self.private_key else None,
                                  self.port if state.listen_port != self.port else None)
        except DeviceError as error:
            raise BackendError(str(error))
        if state.listen_port != self.port or state.private_key != self.private_key:
            changes.append(Change(DEVICE, "set", "%s key and port %d" % (DEVICE_NAME, self.port)))
        changes.extend(self._ensure_mtu())
        return {"backend_type": self.backend_type, "vtep_mac": None, "mtu": self.mtu, "changes": changes,
                "backend_data": {"PublicKey": self.public_key, "Port": self.port}}

    def _open_device(self):
        """Find the running device or create one; logs which implementation and why."""
        changes = []
        index = netlink.link_index(DEVICE_NAME, self.ipr)
        if index is not None:
            kind = netlink.link_attributes(index, self.ipr)["kind"]
            if kind == "wireguard":
                return self._chose(KernelDevice(DEVICE_NAME), "%s exists and is the kernel's" % DEVICE_NAME, changes)
            if UapiDevice(DEVICE_NAME).answers():
                return self._chose(UapiDevice(DEVICE_NAME), "%s exists, run by a wireguard-go that answers on %s"
                                   % (DEVICE_NAME, UapiDevice(DEVICE_NAME).path), changes)
            netlink.delete_link(index, self.ipr)  # a TUN no wireguard-go serves any more, or not ours
            changes.append(Change(DEVICE, "removed", DEVICE_NAME, "removed %s (%s, no WireGuard answering for it)"
                                  % (DEVICE_NAME, kind or "no kind")))
        try:
            create_wireguard(DEVICE_NAME, self.mtu, self.ipr)
            changes.append(Change(DEVICE, "created", DEVICE_NAME, "created %s (kernel wireguard)" % DEVICE_NAME))
            return self._chose(KernelDevice(DEVICE_NAME), "the kernel has the wireguard module", changes)
        except netlink.NetlinkError as error:
            if not is_missing_kind(error):
                raise BackendError("cannot create %s: %s" % (DEVICE_NAME, error))
            reason = "the kernel has no wireguard module (creating a wireguard link: %s)" % error
        try:
            start_wireguard_go(DEVICE_NAME)
        except DeviceError as error:
            raise BackendError(str(error))
        changes.append(Change(DEVICE, "created", DEVICE_NAME, "created %s (wireguard-go)" % DEVICE_NAME))
        return self._chose(UapiDevice(DEVICE_NAME), reason, changes)

    def _chose(self, device, reason, changes):
        self.device = device
        self.device_index = netlink.link_index(DEVICE_NAME, self.ipr)
        if self.device_index is None:
            raise BackendError("%s vanished while being set up" % DEVICE_NAME)
        self.log.info("wireguard: %s runs %s: %s", device.implementation, DEVICE_NAME, reason)
        return changes

    def configure_lease(self, subnet):
        """Address flannel-wg with the lease's first address, bring it up, route the Network
        through it. Returns the changes."""
        if self.device_index is None:
            raise BackendError("configure_lease() called before setup()")
        self.subnet = cidr(subnet)
        return self._ensure_address(self._wanted_address()) + self._ensure_up() + self._ensure_route()

    def _wanted_address(self):
        return "%s/32" % self.subnet.ip

    # -- peers -----------------------------------------------------------------------------------

    def _wanted(self, lease, local_addresses):
        """The WgPeer for a lease, or None (skipped, said once)."""
        subnet = cidr(lease.subnet)
        if self.subnet is not None and subnet == self.subnet:
            return None
        attrs = lease.attrs
        problem = "backend type %s is not wireguard" % attrs.backend_type \
            if attrs.backend_type != self.backend_type else None
        problem = problem or peer_scope_problem(self.config.network, self.subnet, self.public_ip, local_addresses,
                                                subnet, attrs.public_ip) or peer_data_problem(attrs)
        key, port = lease_key_and_port(attrs.backend_data)
        if problem is None and key == self.public_key:
            problem = "its PublicKey is this host's own"
        if problem:
            self._warn_once((str(subnet), problem), "ignoring lease %s: %s", subnet, problem)
            return None
        backend = self.config.backend
        return WgPeer(key, "%s:%d" % (attrs.public_ip, port), (str(subnet),), backend.keepalive, backend.psk)

    def sync(self, peers):
        """Repair the device, then make its peers exactly those of `peers` ({subnet: Lease}),
        reading them back from the device (what someone else changed is put back). Returns the
        changes."""
        changes = self._repair()
        local_addresses = self._addresses.current(reread=True)
        wanted = {}
        for subnet, lease in peers.items():
            peer = self._wanted(lease, local_addresses)
            if peer is not None:
                wanted[str(cidr(subnet))] = peer
        try:
            state = self.device.state()
        except DeviceError as error:
            self.log.error("wireguard: %s", error)
            return changes
        by_key = dict((peer.public_key, peer) for peer in wanted.values())
        removed = sorted(key for key in state.peers if key not in by_key)
        changed = [peer for key, peer in sorted(by_key.items()) if not self._same(state.peers.get(key), peer)]
        changes.extend(self._configure(changed, removed, "added"))
        self._peers = wanted
        self._sessions.read(state.handshakes)
        self._sessions.forget(by_key)
        # A peer programmed before the device was up sent nothing: open its session now.
        self._open_sessions([peer for key, peer in sorted(by_key.items())
                             if peer not in changed and not state.handshakes.get(key)])
        return changes

    @staticmethod
    def _same(current, wanted):
        return current is not None and current._replace(allowed_ips=tuple(sorted(current.allowed_ips))) == wanted

    def add_peer(self, lease):
        peer = self._wanted(lease, self._addresses.current())
        subnet = str(cidr(lease.subnet))
        if peer is None:
            return self.remove_peer(subnet)
        old = self._peers.get(subnet)
        if old == peer:
            return []
        removed = [old.public_key] if old is not None and old.public_key != peer.public_key else []
        changes = self._configure([peer], removed, "updated" if old else "added")
        self._peers[subnet] = peer
        return changes

    def remove_peer(self, subnet):
        old = self._peers.pop(str(cidr(subnet)), None)
        if old is None:
            return []
        self._sessions.forget(self._opened_here())
        return self._configure([], [old.public_key], "removed")

    def _configure(self, peers, removed, verb):
        if not peers and not removed:
            return []
        try:
            self.device.configure(None, None, peers, removed)
        except DeviceError as error:
            self.log.error("wireguard: %s", error)
            return []
        self._open_sessions(peers)
        return ([Change(PEER, "removed", "peer %s" % key) for key in removed]
                + [Change(PEER, verb, "peer %s endpoint %s allowed ips %s" % (
                    peer.public_key, peer.endpoint, ",".join(peer.allowed_ips))) for peer in peers])

    def opens_session_with(self, peer):
        """Whether this end opens the session with `peer` (see the module's note): the end whose
        public key sorts first, so that exactly one end of each pair does. With a persistent
        keepalive both devices send one when the peer is made, and keep the session up."""
        return peer.keepalive == 0 and self.public_key < peer.public_key

    def _open_sessions(self, peers):
        for peer in peers:
            if self.opens_session_with(peer):
                self._sessions.opened(peer.public_key)  # failed too: tried again later, not at once
                try:
                    self.device.open_session(peer.public_key, peer.keepalive)
                except DeviceError as error:
                    self.log.error("wireguard: %s", error)

    def _opened_here(self):
        return dict((peer.public_key, peer) for peer in self._peers.values() if self.opens_session_with(peer))

    def upkeep_in(self):
        """Seconds until a session this end opens is due to be opened again (None: none)."""
        return self._sessions.due_in(self._opened_here())

    def upkeep(self):
        """Open again the sessions due (wireguard_sessions.py), after reading the device's last
        handshakes. The peers stay as they are: no changes."""
        peers = self._opened_here()
        try:
            self._sessions.read(self.device.state().handshakes)
        except DeviceError as error:
            self.log.error("wireguard: %s", error)
        self._silent = set(key for key in self._silent if key in peers and self._sessions.unanswered(key))
        due = self._sessions.due(peers)
        for key in due:
            if not self._sessions.unanswered(key):
                self.log.debug("wireguard: opening the session with peer %s again before it expires", key)
            elif key not in self._silent:  # a host gone for good keeps its lease up to 24 h: said once
                self._silent.add(key)
                self.log.warning("wireguard: no handshake with peer %s since this end last opened the session; "
                                 "opening it again every %d s until it answers", key, RETRY_AFTER)
        self._open_sessions([peers[key] for key in due])

    def handshakes(self):
        """{subnet: unix time of the peer's last handshake (0: none yet)}, for /metrics (its own
        thread: the device may not be chosen yet)."""
        device = self.device
        try:
            state = device.state() if device is not None else None
        except DeviceError:
            state = None
        if state is None:
            return {}
        return dict((subnet, state.handshakes.get(peer.public_key, 0)) for subnet, peer in list(self._peers.items()))

    # -- upkeep ----------------------------------------------------------------------------------

    def _repair(self):
        if self.subnet is None:
            return []
        if netlink.link_index(DEVICE_NAME, self.ipr) != self.device_index or not self._device_answers():
            self.log.warning("%s disappeared or its WireGuard stopped answering; making it again", DEVICE_NAME)
            self._peers = {}
            return self.setup()["changes"] + self.configure_lease(self.subnet)
        return self._ensure_mtu() + self._ensure_address(self._wanted_address()) + self._ensure_up() \
            + self._ensure_route()

    def _device_answers(self):
        try:
            self.device.state()
            return True
        except DeviceError:
            return False

    def owned(self):
        """The device, its address and the Network's route through it (kernel_repairs.Owned); the
        peers live in the device, not in kernel tables: the reconcile reads them back."""
        address = str(self.subnet.ip) if self.subnet is not None else None
        return Owned(self.device_index, DEVICE_NAME, self.mtu, None, address, frozenset([str(self.config.network)]),
                     {}, {}, {}, self.iface.index, self.iface.mtu)

    def restore(self, routes=(), neighbours=(), fdb=()):
        return []  # no per-peer kernel entries

    def device_replaced(self):
        return False  # its events are all device repairs (owned)

    def underlay_mtu_changed(self, mtu):
        """Follow the external interface's MTU (unless Backend.MTU fixes it)."""
        self.iface = self.iface._replace(mtu=mtu)
        self.mtu = (self.config.backend.mtu or mtu) - WIREGUARD_OVERHEAD
        return self.mtu, self._ensure_mtu()

    def teardown(self, successor=None):
        """Delete flannel-wg (its address and route go with it; wireguard-go exits when its TUN
        device is removed) unless `successor` is wireguard too. Returns the changes."""
        self._peers = {}
        index = netlink.link_index(DEVICE_NAME, self.ipr)
        if index is None:
            return []
        if not isinstance(successor, WireguardBackend):
            netlink.delete_link(index, self.ipr)
            return [Change(DEVICE, "removed", DEVICE_NAME)]
        old = self._wanted_address() if self.subnet is not None else None
        if old and old != (successor._wanted_address() if successor.subnet is not None else None) \
                and old in netlink.addresses_of(index, self.ipr):
            netlink.delete_address(index, old, self.ipr)
            return [address_change("removed old", old, DEVICE_NAME)]
        return []
