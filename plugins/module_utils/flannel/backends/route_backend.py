"""What the route-programming backends (vxlan, host-gw) share: per-peer desired entries, a full
reconcile that repairs drift (entries a NIC flap or network restart removed, which flanneld never
restores), and cheap per-event add/remove driven by what was last programmed.

A peer needs up to three kernel entries per family it is routed for: a permanent neighbour (ip,
mac) and an FDB entry (mac, dst) on a vxlan device, and a Route (peer_entries.PeerEntries). A
backend says which, in `_entries_for(lease)`. On a dual-stack network (EnableIPv6) the peer's
IPv6 subnet gets its own, checked with base.ipv6_scope_problem; a neighbour and an FDB entry live on
the link of their family's route.
"""

import errno
import socket

from .. import netlink
from ..changes import FDB, NEIGHBOUR, ROUTE, Change
from ..kernel_repairs import Owned
from ..lease import cidr
from .base import Backend, ipv6_scope_problem, peer_scope_problem
from .peer_entries import PeerEntries, Programmed, families, linked

try:
    from netaddr import IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    IPNetwork = None

ENTRY_TEXT = {NEIGHBOUR: "neighbour %s lladdr %s", FDB: "fdb %s dst %s"}
MISSING = (errno.ENOENT, errno.ESRCH, errno.ENODEV)  # what deleting an entry already gone answers


class RouteBackend(Backend):
    """Base of VxlanBackend and HostGwBackend. Subclasses set `backend_type`, `device_index`
    (None when there is no device) and implement setup(), configure_lease(), _entries_for()."""

    routes_ipv6 = True

    def __init__(self, config, iface, public_ip, ipr=None):
        super().__init__(config, iface, public_ip, ipr)
        self._programmed = Programmed()
        self._local_addresses = set()  # this host's addresses, refreshed by sync/add_peer
        self._batch = netlink.Batch(self.ipr)  # add_peer's requests, sent together
        self.device6_index = None  # vxlan's flannel-v6.<VNI>, when it runs one

    @classmethod
    def create(cls, config, iface, public_ip, flags):
        backend = cls(config, iface, public_ip)
        backend.public_ipv6 = getattr(flags, "public_ipv6", None) or None
        return backend

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
        """Links whose routes inside the flannel network (and IPv6Network) this backend owns."""
        return [self.iface.index]

    def _entry_links(self):
        """(link, family) of the permanent neighbours it owns, and the links of its FDB entries."""
        if self.device_index is None:
            return [], []
        neighbours = [(self.device_index, socket.AF_INET)]
        if self.ipv6 is not None:
            neighbours += [(index, socket.AF_INET6) for index in (self.device_index, self.device6_index)
                           if index is not None]
        return neighbours, [index for index in (self.device_index, self.device6_index) if index is not None]

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
        want_routes, want_neighbours, want_fdb = set(), {}, set()
        for entries in desired.values():
            neighbours, fdb, routes = linked(entries)
            want_routes.update(routes)
            want_neighbours.update(neighbours)
            want_fdb.update(fdb)
        changes = []
        present_routes = set()
        networks = [self.config.network] + ([self.ipv6.network] if self.ipv6 is not None else [])
        for network in networks:
            for index in self._route_links():
                for route in netlink.routes_via(index, self.ipr, inside=network):
                    if route in want_routes:
                        present_routes.add(route)
                    else:
                        self._try(changes, self._entry_change(ROUTE, "removed", route, stale=True),
                                  netlink.delete_route, route, self.ipr)
        neighbour_links, fdb_links = self._entry_links()
        for index, family in neighbour_links:
            extra = (family,) if family != socket.AF_INET else ()  # IPv4: the call as it always was
            for ip, mac in netlink.permanent_neighbours(index, self.ipr, *extra).items():
                wanted = want_neighbours.pop((index, ip), None)
                if wanted is None:
                    self._try(changes, self._entry_change(NEIGHBOUR, "removed", (ip, mac), stale=True),
                              netlink.delete_neighbour, index, ip, self.ipr)
                elif wanted != mac:
                    self._try(changes, self._entry_change(NEIGHBOUR, "replaced", (ip, wanted), was=mac),
                              netlink.replace_neighbour, index, ip, wanted, self.ipr)
        for index in fdb_links:
            for mac, dst in netlink.fdb_entries(index, self.ipr):
                if (index, mac, dst) in want_fdb:
                    want_fdb.discard((index, mac, dst))
                else:
                    self._try(changes, self._entry_change(FDB, "removed", (mac, dst), stale=True),
                              netlink.delete_fdb, index, mac, dst, self.ipr)
        # Add in flannel's order: neighbour, FDB, then the route (the kernel resolves its gateway).
        failed = set()
        for (index, ip), mac in sorted(want_neighbours.items()):
            if not self._try(changes, self._entry_change(NEIGHBOUR, "added", (ip, mac)),
                             netlink.replace_neighbour, index, ip, mac, self.ipr):
                failed.add((ip, mac))
        for index, mac, dst in sorted(want_fdb):
            if not self._try(changes, self._entry_change(FDB, "added", (mac, dst)),
                             netlink.replace_fdb, index, mac, dst, self.ipr):
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
        for neighbour, fdb, route in families(entries):
            if neighbour:
                netlink.replace_neighbour(route.index, *neighbour, ipr=self._batch)
                planned.append(self._entry_change(NEIGHBOUR, verb, neighbour))
            if fdb:
                netlink.replace_fdb(route.index, *fdb, ipr=self._batch)
                planned.append(self._entry_change(FDB, verb, fdb))
            netlink.replace_route(route, ipr=self._batch)
            planned.append(self._entry_change(ROUTE, verb, route))
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
        links = self._neighbour_links()
        # Missing device: deleted, its removal announced after its entries'; that event repairs it.
        for ip, mac in neighbours:
            self._try(changes, self._entry_change(NEIGHBOUR, "restored", (ip, mac)), netlink.replace_neighbour,
                      links.get(ip, self.device_index), ip, mac, self.ipr, missing_ok=True)
        for mac, dst in fdb:
            index = self.device6_index if ":" in dst and self.device6_index is not None else self.device_index
            self._try(changes, self._entry_change(FDB, "restored", (mac, dst)), netlink.replace_fdb,
                      index, mac, dst, self.ipr, missing_ok=True)
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
        keep = set(route for entries in successor._programmed.values() for _n, _f, route in families(entries)) \
            if isinstance(successor, RouteBackend) else set()
        changes = []
        for entries in self._programmed.values():
            for _neighbour, _fdb, route in families(entries):
                if route in keep:
                    continue
                # A route the successor replaced (same destination), or one on a device already
                # re-created, no longer exists: nothing to do.
                self._try(changes, self._entry_change(ROUTE, "removed", route), netlink.delete_route,
                          route, self.ipr, missing_ok=True)
        self._programmed = Programmed()
        return changes + self._remove_device(successor)

    def _remove_device(self, successor):
        """Delete this backend's device unless `successor` uses it; returns the changes."""
        return []

    # -- helpers ---------------------------------------------------------------------------------

    def _neighbour_links(self):
        """{ip: link} of the programmed peers' neighbours (each on its route's link)."""
        links = {}
        for entries in self._programmed.values():
            links.update((ip, index) for (index, ip) in linked(entries)[0])
        return links

    def _direct_route(self, subnet, address):
        """A Route to `subnet` via `address` on the external interface, for a peer reached straight
        over the LAN (host-gw, DirectRouting, a vxlan/host-gw mix); None when `address` is not
        on-link there."""
        if netlink.direct_route(address, self.ipr) != self.iface.index:
            return None
        return netlink.Route(str(subnet), address, self.iface.index, False)

    def _direct_entries(self, lease):
        """A peer still on the other route backend (vxlan or host-gw, mid-way through a rolling
        change of Backend.Type): a route via its PublicIP on the external interface, which is
        what a host-gw host sends and what a vxlan host receives and forwards (and one via its
        PublicIPv6 for its IPv6 subnet). Only when that address is on-link; otherwise None, after
        saying so once."""
        subnet = cidr(lease.subnet)
        public_ip = lease.attrs.public_ip
        route = self._direct_route(subnet, public_ip)
        if route is None:
            self._warn_once((str(subnet), lease.attrs.backend_type, "mixed"),
                            "ignoring lease %s: backend %s, and its PublicIP %s is not on-link on %s, so it "
                            "is reachable only once both hosts run the same backend",
                            subnet, lease.attrs.backend_type, public_ip, self.iface.name)
            return None
        return PeerEntries(None, None, route, None, None, self._direct_route6(lease))

    def _direct_route6(self, lease):
        """The Route to a peer's IPv6 subnet via its PublicIPv6 on the external interface, or None
        (said once why: no PublicIPv6, or not on-link)."""
        if self.ipv6 is None or lease.ipv6_subnet is None:
            return None
        public_ipv6 = lease.attrs.public_ipv6
        route = self._direct_route(lease.ipv6_subnet, public_ipv6) if public_ipv6 else None
        if route is None:
            why = "its PublicIPv6 %s is not on-link on %s" % (public_ipv6, self.iface.name) if public_ipv6 \
                else "it has no PublicIPv6"
            self._warn_once((str(lease.subnet), "ipv6", public_ipv6),
                            "not routing the IPv6 subnet %s of lease %s: %s (a route via the peer's PublicIPv6 "
                            "needs it on this host's link)", lease.ipv6_subnet, lease.subnet, why)
        return route

    def _wanted(self, lease):
        subnet = cidr(lease.subnet)
        if self.subnet is not None and subnet == self.subnet:
            return None  # our own lease is never a peer
        problem = peer_scope_problem(self.config.network, self.subnet, self.public_ip, self._local_addresses,
                                     subnet, lease.attrs.public_ip)
        if problem is None and self.ipv6 is not None and lease.ipv6_subnet is not None:
            problem = ipv6_scope_problem(self.ipv6.network, self.subnet6, self.public_ipv6, self._local_addresses,
                                         lease.ipv6_subnet, lease.attrs.public_ipv6)
        if problem:
            self._warn_once((str(subnet), problem), "ignoring lease %s: %s", subnet, problem)
            return None
        return self._entries_for(lease)

    def _remove_leftovers(self, old, new):
        """Delete the old entries of a peer that its new entries no longer cover, in one request.
        An entry already gone is no change and no error."""
        planned = []
        others = [e for e in self._programmed.values() if e is not new]
        new_neighbours, new_fdb, new_routes = linked(new)
        old_neighbours, old_fdb, old_routes = linked(old)
        for route in old_routes:
            # A replace on another link does not remove the old one; same dst+link was replaced.
            if not any(route.dst == kept.dst and route.index == kept.index for kept in new_routes):
                netlink.delete_route(route, ipr=self._batch)
                planned.append(self._entry_change(ROUTE, "removed", route))
        for (index, ip), mac in sorted(old_neighbours.items()):
            if (index, ip) not in new_neighbours:
                netlink.delete_neighbour(index, ip, ipr=self._batch)
                planned.append(self._entry_change(NEIGHBOUR, "removed", (ip, mac)))
        shared = set(entry for entries in others for entry in linked(entries)[1])
        for index, mac, dst in sorted(old_fdb - new_fdb - shared):
            netlink.delete_fdb(index, mac, dst, ipr=self._batch)
            planned.append(self._entry_change(FDB, "removed", (mac, dst)))
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
