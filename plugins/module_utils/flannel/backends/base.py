"""What the route-programming backends share: per-peer desired entries, a full reconcile that
repairs drift (entries a NIC flap or network restart removed, which flanneld never restores), and
cheap per-event add/remove driven by what was last programmed.

A peer needs up to three kernel entries: a permanent neighbour (ip, mac) and an FDB entry
(mac, dst) on the vxlan device, and a Route. A backend says which, in `_entries_for(lease)`.
"""

import errno
import logging

from .. import netlink
from ..changes import ADDRESS, DEVICE, FDB, NEIGHBOUR, ROUTE, Change
from ..kernel_repairs import Owned
from .peer_entries import PeerEntries, Programmed

try:
    from netaddr import IPAddress, IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    IPAddress = IPNetwork = None

ENTRY_TEXT = {NEIGHBOUR: "neighbour %s lladdr %s", FDB: "fdb %s dst %s"}
MISSING = (errno.ENOENT, errno.ESRCH, errno.ENODEV)  # what deleting an entry already gone answers


def peer_scope_problem(network, own_subnet, own_public_ip, local_addresses, subnet, public_ip):
    """Why no route, neighbour, FDB entry or forwarding entry may be made for a peer with this
    subnet and PublicIP, or None. Every backend asks this, whatever parsed the lease, so that no
    key can steer traffic for prefixes outside the flannel network or for this host's own
    addresses. `local_addresses`: this host's IPv4 addresses (IPAddress)."""
    subnet = IPNetwork(str(subnet)).cidr
    if subnet not in network:
        return "subnet %s is outside the flannel network %s" % (subnet, network)
    if own_subnet is not None and (subnet.first <= own_subnet.last and own_subnet.first <= subnet.last):
        return "subnet %s overlaps this host's own subnet %s" % (subnet, own_subnet)
    own = sorted(address for address in local_addresses if address in subnet)
    if own:
        return "subnet %s contains this host's address %s" % (subnet, own[0])
    try:
        gateway = IPAddress(public_ip)
    except Exception:
        return "PublicIP %r is not an IP address" % (public_ip,)
    if gateway.version != 4 or gateway in network:
        return "PublicIP %s is not an IPv4 address outside the flannel network" % public_ip
    if gateway in local_addresses or str(gateway) == own_public_ip:
        return "PublicIP %s is this host's own address" % public_ip
    return None


def address_change(action, address, device):
    """The Change of an address added to or removed from a device: '<action> address <a/len>
    (to|from) <device>'."""
    what = "address %s %s %s" % (address, "to" if action == "added" else "from", device)
    return Change(ADDRESS, action.split()[0], what, "%s %s" % (action, what))


def mtu_change(index, device, mtu, was, ipr):
    """Set a device's MTU; returns its Change."""
    netlink.set_link_mtu(index, mtu, ipr)
    return Change(DEVICE, "set", "%s mtu %d" % (device, mtu), "set %s mtu %d (was %d)" % (device, mtu, was))


class BackendError(Exception):
    """The backend cannot run with this host's configuration; the message says why."""


class Backend:
    """What every backend shares: the config, the external interface, this host's public IP and
    subnet, one netlink socket for its life, this host's addresses, and warnings said once.

    A backend provides setup(), configure_lease(subnet), sync(peers), add_peer(lease),
    remove_peer(subnet) and teardown(successor); each returns the Changes it made (setup() in
    its dict's "changes"). docs/architecture.md lists the rest of what a new backend needs."""

    backend_type = None
    routes_ipv6 = False  # whether it routes the IPv6 subnets of a dual-stack network (EnableIPv6)

    def __init__(self, config, iface, public_ip, ipr=None):
        self.config = config
        self.iface = netlink.Interface(*iface)
        self.public_ip = str(IPAddress(public_ip))
        self.log = logging.getLogger("flannel.backend." + (self.backend_type or "base"))
        self._own_ipr = ipr is None
        self.ipr = ipr if ipr is not None else netlink.open_ipr()  # one socket for the agent's life
        self.device_name = None  # the backend's device, if it has one (its index: device_index)
        self.device_index = None
        self.subnet = None
        self._warned = set()
        self._addresses = netlink.LocalAddresses(self.ipr, listen=self._own_ipr)
        if getattr(config, "ipv6", None) is not None and not self.routes_ipv6:
            self.log.warning("EnableIPv6: IPv6 subnets are leased and written to subnet.env, but the %s backend "
                             "does not route them yet", self.backend_type)

    @classmethod
    def create(cls, config, iface, public_ip, flags):
        """The backend for the agent's BackendFlags `flags` (make_backend's call)."""
        return cls(config, iface, public_ip)

    def close(self):
        self._addresses.close()
        if self._own_ipr:
            self.ipr.close()

    def announce_to(self, events):
        """`events`: the agent's kernel-events socket (netlink.events.KernelEvents; None: none
        listens), told before each batch of requests what it changes, so that the kernel drops
        the announcements of the backend's own changes instead of waking the repairs for them."""

    def _ensure_address(self, wanted):
        """Give the device the address `wanted` ('a.b.c.d/len'), removing its other addresses
        inside the flannel network (an old lease's); foreign ones (dhcpcd, APIPA) stay."""
        changes = []
        for address in netlink.addresses_of(self.device_index, self.ipr):
            if address == wanted:
                wanted = None
            elif IPNetwork(address).ip in self.config.network:
                netlink.delete_address(self.device_index, address, self.ipr)
                changes.append(address_change("removed old", address, self.device_name))
        if wanted:
            netlink.add_address(self.device_index, wanted, self.ipr)
            changes.append(address_change("added", wanted, self.device_name))
        return changes

    def _ensure_up(self):
        if netlink.link_attributes(self.device_index, self.ipr)["state"] == "up":
            return []
        netlink.set_link_up(self.device_index, self.ipr)
        return [Change(DEVICE, "set up", self.device_name, "set %s up" % self.device_name)]

    def _warn_once(self, key, message, *args):
        if key not in self._warned:
            self._warned.add(key)
            self.log.warning(message, *args)


class RouteBackend(Backend):
    """Base of VxlanBackend and HostGwBackend. Subclasses set `backend_type`, `device_index`
    (None when there is no device) and implement setup(), configure_lease(), _entries_for()."""

    def __init__(self, config, iface, public_ip, ipr=None):
        super().__init__(config, iface, public_ip, ipr)
        self._programmed = Programmed()
        self._local_addresses = set()  # this host's IPv4 addresses, refreshed by sync/add_peer
        self._batch = netlink.Batch(self.ipr)  # add_peer's requests, sent together

    def close(self):
        self._batch.close()
        super().close()

    def announce_to(self, events):
        self._batch.own_announcements = events

    # -- what subclasses provide ----------------------------------------------------------------

    def _entries_for(self, lease):
        """PeerEntries for one peer's lease, or None to skip it (after logging why)."""
        raise NotImplementedError

    def _link_names(self):
        return {self.iface.index: self.iface.name}

    def _route_links(self):
        """Links whose routes inside the flannel network this backend owns."""
        return [self.iface.index]

    # -- public API ------------------------------------------------------------------------------

    def sync(self, peers):
        """Make the kernel hold exactly the entries `peers` ({subnet: Lease} of other hosts) need.

        Idempotent; returns one Change per change made (empty: nothing was wrong).
        """
        self._local_addresses = self._addresses.current(reread=True)
        desired = {}
        for subnet, lease in peers.items():
            entries = self._wanted(lease)
            if entries is not None:
                desired[str(IPNetwork(str(subnet)))] = entries
        want_routes = set(e.route for e in desired.values())
        want_neighbours = dict(e.neighbour for e in desired.values() if e.neighbour)
        want_fdb = set(e.fdb for e in desired.values() if e.fdb)
        changes = []
        present_routes = set()
        for index in self._route_links():
            for route in netlink.routes_via(index, self.ipr, inside=self.config.network):
                if route in want_routes:
                    present_routes.add(route)
                else:
                    self._try(changes, self._entry_change(ROUTE, "removed", route, stale=True),
                              netlink.delete_route, route, self.ipr)
        if self.device_index is not None:
            for ip, mac in netlink.permanent_neighbours(self.device_index, self.ipr).items():
                if ip not in want_neighbours:
                    self._try(changes, self._entry_change(NEIGHBOUR, "removed", (ip, mac), stale=True),
                              netlink.delete_neighbour, self.device_index, ip, self.ipr)
                elif want_neighbours[ip] != mac:
                    self._try(changes, self._entry_change(NEIGHBOUR, "replaced", (ip, want_neighbours[ip]), was=mac),
                              netlink.replace_neighbour, self.device_index, ip, want_neighbours[ip], self.ipr)
                want_neighbours.pop(ip, None)
            for mac, dst in netlink.fdb_entries(self.device_index, self.ipr):
                if (mac, dst) in want_fdb:
                    want_fdb.discard((mac, dst))
                else:
                    self._try(changes, self._entry_change(FDB, "removed", (mac, dst), stale=True),
                              netlink.delete_fdb, self.device_index, mac, dst, self.ipr)
        # Add in flannel's order: neighbour, FDB, then the route (the kernel resolves its gateway).
        failed = set()
        for ip, mac in sorted(want_neighbours.items()):
            if not self._try(changes, self._entry_change(NEIGHBOUR, "added", (ip, mac)),
                             netlink.replace_neighbour, self.device_index, ip, mac, self.ipr):
                failed.add((ip, mac))
        for mac, dst in sorted(want_fdb):
            if not self._try(changes, self._entry_change(FDB, "added", (mac, dst)),
                             netlink.replace_fdb, self.device_index, mac, dst, self.ipr):
                failed.add((mac, dst))
        for route in sorted(want_routes - present_routes, key=str):
            if not self._try(changes, self._entry_change(ROUTE, "added", route),
                             netlink.replace_route, route, self.ipr):
                failed.add(route)
        # A peer that failed is left out, so that add_peer() retries it instead of skipping it.
        self._programmed = Programmed((key, entries) for key, entries in desired.items()
                                      if not failed.intersection(entries))
        return changes

    def add_peer(self, lease):
        """Program one peer (new or changed lease) without dumping kernel tables; returns changes."""
        key = str(lease.subnet)
        self._local_addresses = self._addresses.current()
        entries = self._wanted(lease)
        if entries is None:
            return self.remove_peer(lease.subnet)
        old = self._programmed.get(key)
        if old == entries:
            return []
        verb = "added" if old is None else "updated"
        # One request for the peer's entries, in flannel's order: neighbour, FDB, then the route.
        planned = []
        if entries.neighbour:
            netlink.replace_neighbour(self.device_index, *entries.neighbour, ipr=self._batch)
            planned.append(self._entry_change(NEIGHBOUR, verb, entries.neighbour))
        if entries.fdb:
            netlink.replace_fdb(self.device_index, *entries.fdb, ipr=self._batch)
            planned.append(self._entry_change(FDB, verb, entries.fdb))
        netlink.replace_route(entries.route, ipr=self._batch)
        planned.append(self._entry_change(ROUTE, verb, entries.route))
        refused = self._batch.send()
        changes = [change for position, change in enumerate(planned) if position not in refused]
        if refused:
            self._programmed.pop(key, None)  # unknown state: the next sync repairs it
            for error in refused.values():
                self.log.error("failed to program peer %s: %s%s", key, error, self._failure_hint(error))
            return changes
        self._programmed[key] = entries
        if old is not None:
            changes.extend(self._remove_leftovers(old, entries))
        return changes

    def remove_peer(self, subnet):
        """Remove what was programmed for a vanished peer; returns changes."""
        old = self._programmed.pop(str(IPNetwork(str(subnet))), None)
        if old is None:
            return []
        return self._remove_leftovers(old, PeerEntries(None, None, None))

    def owned(self):
        """What this backend holds in the kernel (kernel_repairs.Owned), for repairs on events."""
        routes, neighbours, fdb = self._programmed.entries()
        return Owned(self.device_index, None, None, None, None, frozenset(), routes, neighbours, fdb,
                     self.iface.index, self.iface.mtu)

    def restore(self, routes=(), neighbours=(), fdb=()):
        """Write again entries of programmed peers that someone removed or changed (one request
        each, no dump), in flannel's order; returns the Changes."""
        changes = []
        # Missing device: deleted, its removal announced after its entries'; that event repairs it.
        for ip, mac in neighbours:
            self._try(changes, self._entry_change(NEIGHBOUR, "restored", (ip, mac)), netlink.replace_neighbour,
                      self.device_index, ip, mac, self.ipr, missing_ok=True)
        for mac, dst in fdb:
            self._try(changes, self._entry_change(FDB, "restored", (mac, dst)), netlink.replace_fdb,
                      self.device_index, mac, dst, self.ipr, missing_ok=True)
        for route in routes:
            self._try(changes, self._entry_change(ROUTE, "restored", route), netlink.replace_route, route, self.ipr,
                      missing_ok=True)
        return changes

    def device_replaced(self):
        """Whether the device is gone or another now has its name (one lookup, no dump)."""
        return self.device_name is not None and netlink.link_index(self.device_name, self.ipr) != self.device_index

    def underlay_mtu_changed(self, mtu):
        """The external interface's MTU is now `mtu`: follow it. Returns (the MTU containers
        must use, changes); host-gw sends packets as they are, so it is the interface's."""
        self.iface = self.iface._replace(mtu=mtu)
        return mtu, []

    def teardown(self, successor=None):
        """Stop, removing what this backend programmed that `successor` (the backend that took
        over, already running) does not use: its peers' routes, then its own device
        (_remove_device). Returns the changes."""
        keep = set(entries.route for entries in successor._programmed.values()) \
            if isinstance(successor, RouteBackend) else set()
        changes = []
        for entries in self._programmed.values():
            if entries.route in keep:
                continue
            # A route the successor replaced (same destination), or one on a device already
            # re-created, no longer exists: nothing to do.
            self._try(changes, self._entry_change(ROUTE, "removed", entries.route), netlink.delete_route,
                      entries.route, self.ipr, missing_ok=True)
        self._programmed = Programmed()
        return changes + self._remove_device(successor)

    def _remove_device(self, successor):
        """Delete this backend's device unless `successor` uses it; returns the changes."""
        return []

    # -- helpers ---------------------------------------------------------------------------------

    def _direct_entries(self, lease):
        """A peer still on the other route backend (vxlan or host-gw, mid-way through a rolling
        change of Backend.Type): a route via its PublicIP on the external interface, which is
        what a host-gw host sends and what a vxlan host receives and forwards. Only when that
        address is on-link; otherwise None, after saying so once."""
        subnet = IPNetwork(str(lease.subnet)).cidr
        public_ip = lease.attrs.public_ip
        if netlink.direct_route(public_ip, self.ipr) != self.iface.index:
            self._warn_once((str(subnet), lease.attrs.backend_type, "mixed"),
                            "ignoring lease %s: backend %s, and its PublicIP %s is not on-link on %s, so it "
                            "is reachable only once both hosts run the same backend",
                            subnet, lease.attrs.backend_type, public_ip, self.iface.name)
            return None
        return PeerEntries(None, None, netlink.Route(str(subnet), public_ip, self.iface.index, False))

    def _wanted(self, lease):
        subnet = IPNetwork(str(lease.subnet)).cidr
        if self.subnet is not None and subnet == self.subnet:
            return None  # our own lease is never a peer
        problem = peer_scope_problem(self.config.network, self.subnet, self.public_ip, self._local_addresses,
                                     subnet, lease.attrs.public_ip)
        if problem:
            self._warn_once((str(subnet), problem), "ignoring lease %s: %s", subnet, problem)
            return None
        return self._entries_for(lease)

    def _remove_leftovers(self, old, new):
        """Delete the old entries of a peer that its new entries no longer cover, in one request.
        An entry already gone is no change and no error."""
        planned = []
        others = [e for e in self._programmed.values() if e is not new]
        if old.route and (new.route is None or new.route.dst != old.route.dst
                          or new.route.index != old.route.index):
            # A replace on another link does not remove the old one; same dst+link was replaced.
            netlink.delete_route(old.route, ipr=self._batch)
            planned.append(self._entry_change(ROUTE, "removed", old.route))
        if old.neighbour and (new.neighbour is None or new.neighbour[0] != old.neighbour[0]):
            netlink.delete_neighbour(self.device_index, old.neighbour[0], ipr=self._batch)
            planned.append(self._entry_change(NEIGHBOUR, "removed", old.neighbour))
        if old.fdb and old.fdb != new.fdb and all(e.fdb != old.fdb for e in others):
            netlink.delete_fdb(self.device_index, old.fdb[0], old.fdb[1], ipr=self._batch)
            planned.append(self._entry_change(FDB, "removed", old.fdb))
        refused = self._batch.send() if planned else {}
        changes = []
        for position, change in enumerate(planned):
            error = refused.get(position)
            if error is None:
                changes.append(change)
            elif not netlink.is_errno(error, *MISSING):
                self.log.error("failed: %s: %s%s", change, error, self._failure_hint(error))
        return changes

    def _try(self, changes, change, action, *args, missing_ok=False):
        """Run one kernel change and record its Change, or log the failure; returns whether it
        succeeded."""
        try:
            action(*args)
        except netlink.NetlinkError as error:
            if missing_ok and netlink.is_errno(error, *MISSING):
                return True
            self.log.error("failed: %s: %s%s", change, error, self._failure_hint(error))
            return False
        changes.append(change)
        return True

    def _failure_hint(self, error):
        """Extra words for a failed kernel change that tell the operator what to fix."""
        return ""

    def _entry_change(self, kind, action, entry, stale=False, was=None):
        """The Change of one peer entry: a route (a netlink.Route), a neighbour (ip, mac) or an FDB
        entry (mac, dst); its text as '<action> [stale ]<entry>[ (was <was>)]'."""
        what = self._route_text(entry) if kind == ROUTE else ENTRY_TEXT[kind] % entry
        text = "%s %s%s%s" % (action, "stale " if stale else "", what, " (was %s)" % was if was else "")
        return Change(kind, action, what, text)

    def _route_text(self, route):
        return netlink.format_route(route, self._link_names().get(route.index))
