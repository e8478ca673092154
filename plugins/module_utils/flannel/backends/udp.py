"""The udp backend, as flanneld v0.10's: TUN device `flannel0` addressed with the lease's first
address and the Network's prefix, MTU = interface MTU - 28, the whole Network routed through it,
and a UDP socket on <interface IP>:<Backend.Port> (8285). Each IP packet read from the device is
sent, as the whole UDP payload, to the PublicIP:Port of the peer holding the destination subnet.
The lease carries only {"PublicIP": ...} (no BackendType), as upstream writes it.

The forwarding runs in worker processes (udp_proxy.Worker), one per CPU, each with its own TUN
queue and its own SO_REUSEPORT socket. The agent only sends them route tables, so etcd being
down or slow never touches forwarding. Workers die with the agent (PR_SET_PDEATHSIG) and hold
none of its other descriptors (close_inherited); the device is persistent, so during a restart
the Network stays routed into it and not to the default route, and the next agent attaches to it
again.
"""

import ctypes
import errno
import gc
import os
import signal
import socket

from .. import netlink
from ..changes import DEVICE, ROUTE, WORKER, Change
from ..kernel_repairs import Owned
from ..lease import cidr
from . import tun, udp_packets, udp_proxy
from .base import BackendError, address_change, peer_scope_problem
from .network_device import NetworkDeviceBackend

try:
    from netaddr import IPAddress, IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    IPAddress = IPNetwork = None

DEVICE_NAME = "flannel0"
UDP_OVERHEAD = 28  # outer IPv4 20 + UDP 8
PR_SET_PDEATHSIG = 1
SOCKET_BUFFER = 4 << 20


def udp_peer_type(backend_type):
    """Whether a lease's BackendType names a udp peer: upstream's udp leases have none."""
    return backend_type in (None, "", "udp")


def worker_count():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def close_inherited(keep):
    """In a forked worker: close every descriptor but stdio and `keep`. A worker must not hold the
    agent's listeners (/healthz, /metrics), etcd connections or the other workers' queues: one
    still exiting after the agent was killed kept a restarted agent from listening on its port."""
    gc.freeze()  # the agent's objects are never collected here: none closes a number reused below
    low = 3
    for fd in sorted(fd for fd in keep if fd >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


class UdpBackend(NetworkDeviceBackend):
    backend_type = "udp"

    def __init__(self, config, iface, public_ip, ipr=None, workers=None):
        super().__init__(config, iface, public_ip, ipr)
        self.device_name = DEVICE_NAME
        self.port = config.backend.port
        self.mtu = self.iface.mtu - UDP_OVERHEAD
        self.workers = workers or worker_count()
        self.tun_fds = []
        self.sockets = []
        self.controls = []  # agent's ends of the SOCK_SEQPACKET pairs, one per worker
        self.pids = []
        self.counters = udp_packets.CounterBlock(self.workers)
        self._routes = {}  # subnet (str) -> peer PublicIP: what the workers were last sent
        self._reported = dict.fromkeys(udp_packets.COUNTERS, 0)

    # -- set-up ----------------------------------------------------------------------------------

    def setup(self):
        """Open (create or re-attach) flannel0 and bind the UDP sockets; returns
        {"backend_type": None (no BackendType in the lease), "vtep_mac": None, "mtu", "changes"}."""
        changes = []
        existed = netlink.link_index(DEVICE_NAME, self.ipr) is not None
        try:
            self.tun_fds = tun.open_queues(DEVICE_NAME, self.workers)
        except tun.TunError as error:
            if error.errno != errno.EINVAL:
                raise BackendError(str(error))
            self.log.warning("%s; recreating it", error)
            netlink.delete_link(netlink.link_index(DEVICE_NAME, self.ipr), self.ipr)
            changes.append(Change(DEVICE, "removed", DEVICE_NAME, "removed incompatible %s" % DEVICE_NAME))
            existed = False
            self.tun_fds = tun.open_queues(DEVICE_NAME, self.workers)
        except OSError as error:
            raise BackendError("cannot open TUN device %s: %s" % (DEVICE_NAME, error))
        self.device_index = netlink.link_index(DEVICE_NAME, self.ipr)
        if not existed:
            changes.append(Change(DEVICE, "created", DEVICE_NAME, "created %s (tun, no packet information, %d queues)"
                                  % (DEVICE_NAME, self.workers)))
        try:
            self.sockets = [self._bind() for _worker in range(self.workers)]
        except OSError as error:
            self._close_data_plane()
            raise BackendError("cannot bind UDP %s:%d: %s%s" % (
                self.iface.address, self.port, error.strerror or error,
                " (another flanneld with the udp backend?)" if error.errno == errno.EADDRINUSE else ""))
        changes.extend(self._ensure_mtu())
        return {"backend_type": None, "vtep_mac": None, "mtu": self.mtu, "changes": changes}

    def _bind(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        sock.bind((self.iface.address, self.port))
        return sock

    def configure_lease(self, subnet):
        """Address flannel0 with <subnet first address>/<Network prefix>, bring it up, route the
        Network through it, and (re)start the workers. Returns the changes."""
        if self.device_index is None:
            raise BackendError("configure_lease() called before setup()")
        self.subnet = cidr(subnet)
        changes = self._ensure_address(self._wanted_address()) + self._ensure_up() + self._ensure_route()
        if not self.pids:
            self._start_workers()
            changes.append(self._workers_change("started", self.workers))
        self._send_routes()
        return changes

    def _wanted_address(self):
        return "%s/%d" % (self.subnet.ip, self.config.network.prefixlen)

    # -- workers ---------------------------------------------------------------------------------

    def _start_workers(self):
        self.pids = [None] * self.workers
        self.controls = [None] * self.workers
        for slot in range(self.workers):
            self._start_worker(slot)

    def _start_worker(self, slot):
        if self.controls[slot] is not None:
            self.controls[slot].close()
        agent_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        agent_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        network = (int(self.config.network.ip), int(self.config.network.netmask))
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: no logging (a lock may be held by another agent thread)
            status = 0
            try:
                agent_end.close()
                ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != parent:
                    os._exit(0)
                close_inherited((self.tun_fds[slot], self.sockets[slot].fileno(), worker_end.fileno()))
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                udp_proxy.Worker(self.tun_fds[slot], self.sockets[slot], worker_end, network,
                                 int(IPNetwork("0.0.0.0/%d" % self.config.subnet_len).netmask),
                                 self.counters, slot).run()
            except BaseException as error:  # noqa: B036 -- a worker must never return into the agent
                os.write(2, ("udp worker %d failed: %r\n" % (slot, error)).encode())
                status = 1
            finally:
                os._exit(status)
        worker_end.close()
        self.pids[slot] = pid
        self.controls[slot] = agent_end

    def _reap_workers(self):
        """Restart workers that died; returns the changes."""
        changes = []
        for slot, pid in enumerate(self.pids):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self.log.error("udp worker %d (pid %d) exited (status %d); restarting it", slot, pid,
                               os.waitstatus_to_exitcode(status) if status else 0)
                self._start_worker(slot)
                self._send_routes(only=slot)
                changes.append(Change(WORKER, "restarted", "forwarding worker %d" % slot))
        return changes

    def _stop_workers(self):
        for control in self.controls:
            try:
                control.send(udp_packets.COMMAND_STOP)
            except OSError:
                pass
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (OSError, ChildProcessError):
                pass
        for control in self.controls:
            control.close()
        self.pids, self.controls = [], []

    def _send_routes(self, only=None):
        routes = [(int(IPNetwork(subnet).ip), IPNetwork(subnet).prefixlen, int(IPAddress(ip)), self.port)
                  for subnet, ip in sorted(self._routes.items())]
        message = udp_packets.pack_routes(routes)
        for slot, control in enumerate(self.controls):
            if only is not None and slot != only:
                continue
            try:
                control.send(message)
            except OSError as error:  # a dead worker: _reap_workers restarts it with the table
                self.log.warning("cannot send routes to udp worker %d: %s", slot, error)

    # -- peers -----------------------------------------------------------------------------------

    def _peer_ip(self, lease, local_addresses):
        subnet = cidr(lease.subnet)
        if self.subnet is not None and subnet == self.subnet:
            return None
        if not udp_peer_type(lease.attrs.backend_type):
            self._warn_once((str(subnet), lease.attrs.backend_type), "ignoring lease %s: backend type %s is not udp",
                            subnet, lease.attrs.backend_type)
            return None
        problem = peer_scope_problem(self.config.network, self.subnet, self.public_ip, local_addresses,
                                     subnet, lease.attrs.public_ip)
        if problem:
            self._warn_once((str(subnet), problem), "ignoring lease %s: %s", subnet, problem)
            return None
        return lease.attrs.public_ip

    def sync(self, peers):
        """Repair the device, restart dead workers, send the whole table if it changed, and log
        new drops. Returns the repairs and table changes."""
        changes = self._repair()
        wanted = {}
        local_addresses = self._addresses.current(reread=True)
        for subnet, lease in peers.items():
            ip = self._peer_ip(lease, local_addresses)
            if ip is not None:
                wanted[str(cidr(subnet))] = ip
        for subnet in sorted(set(self._routes) - set(wanted)):
            changes.append(self._route_change("removed", subnet))
        for subnet, ip in sorted(wanted.items()):
            if self._routes.get(subnet) != ip:
                changes.append(self._route_change("added", subnet, ip, worded=False))
        if wanted != self._routes:
            self._routes = wanted
            self._send_routes()
        self._report_drops()
        return changes

    def add_peer(self, lease):
        ip = self._peer_ip(lease, self._addresses.current())
        if ip is None:
            return self.remove_peer(lease.subnet)
        subnet = str(cidr(lease.subnet))
        if self._routes.get(subnet) == ip:
            return []
        verb = "updated" if subnet in self._routes else "added"
        self._routes[subnet] = ip
        self._send_routes()
        return [self._route_change(verb, subnet, ip)]

    def remove_peer(self, subnet):
        subnet = str(cidr(subnet))
        if self._routes.pop(subnet, None) is None:
            return []
        self._send_routes()
        return [self._route_change("removed", subnet)]

    def _route_change(self, action, subnet, ip=None, worded=True):
        """'<action> udp route <subnet>[ via <ip>:<port>]': a route of the workers' table (a
        reconcile's line has no action word, as ever)."""
        what = "udp route %s" % subnet if ip is None else "udp route %s via %s:%d" % (subnet, ip, self.port)
        return Change(ROUTE, action, what, None if worded else what)

    def _workers_change(self, action, count):
        return Change(WORKER, action, "%d forwarding worker%s on UDP %s:%d" % (
            count, "" if count == 1 else "s", self.iface.address, self.port))

    # -- upkeep ----------------------------------------------------------------------------------

    def _repair(self):
        if self.subnet is None:
            return []
        if netlink.link_index(DEVICE_NAME, self.ipr) != self.device_index:
            self.log.warning("%s disappeared or was replaced; recreating it", DEVICE_NAME)
            self._close_data_plane()
            info = self.setup()
            return info["changes"] + self.configure_lease(self.subnet)
        return (self._ensure_mtu() + self._ensure_address(self._wanted_address()) + self._ensure_up()
                + self._ensure_route()
                + self._reap_workers())

    def owned(self):
        """What this backend holds in the kernel (kernel_repairs.Owned): the device, its address
        and the Network's route through it; the peers are the workers' table, not kernel entries."""
        address = str(self.subnet.ip) if self.subnet is not None else None
        return Owned(self.device_index, DEVICE_NAME, self.mtu, None, address, frozenset([str(self.config.network)]),
                     {}, {}, {}, self.iface.index, self.iface.mtu)

    def restore(self, routes=(), neighbours=(), fdb=()):
        return []  # it owns no per-peer kernel entries

    def device_replaced(self):
        return False  # its events are all device repairs (owned): nothing is restored alone

    def underlay_mtu_changed(self, mtu):
        """Follow the external interface's MTU: flannel0's is `mtu` less the UDP overhead.
        Returns (flannel0's MTU, changes)."""
        self.iface = self.iface._replace(mtu=mtu)
        self.mtu = mtu - UDP_OVERHEAD
        return self.mtu, self._ensure_mtu()

    def counts(self):
        return self.counters.totals()

    def _report_drops(self):
        totals = self.counts()
        for name, what in (("no_route", "to subnets with no lease"),
                           ("malformed_udp", "received malformed (short or not IPv4)"),
                           ("outside_network", "received for addresses outside %s" % self.config.network),
                           ("ttl_expired", "with an expired TTL")):
            new = totals[name] - self._reported[name]
            if new > 0:
                self.log.warning("udp: dropped %d packet%s %s (%d in all)", new, "" if new == 1 else "s",
                                 what, totals[name])
        self._reported = totals

    def teardown(self, successor=None):
        """Stop forwarding and, unless `successor` is udp too (it attached its own queues to
        flannel0), delete flannel0 with its address and the Network's route. Returns the changes."""
        changes = []
        if self.pids:
            changes.append(self._workers_change("stopped", len(self.pids)))
        self._close_data_plane()
        self._routes = {}
        index = netlink.link_index(DEVICE_NAME, self.ipr)
        if index is None:
            return changes
        if not isinstance(successor, UdpBackend):
            netlink.delete_link(index, self.ipr)
            return changes + [Change(DEVICE, "removed", DEVICE_NAME)]
        old = self._wanted_address() if self.subnet is not None else None
        if old and old != successor._wanted_address() and old in netlink.addresses_of(index, self.ipr):
            netlink.delete_address(index, old, self.ipr)
            changes.append(address_change("removed old", old, DEVICE_NAME))
        return changes

    def _close_data_plane(self):
        self._stop_workers()
        for sock in self.sockets:
            sock.close()
        for fd in self.tun_fds:
            os.close(fd)
        self.sockets, self.tun_fds = [], []

    def close(self):
        """Stop forwarding; the device, its address and route stay for the next agent."""
        self._close_data_plane()
        super().close()
