"""Repairs on kernel events: what the agent owns (Owned, from its backend), which of the
announced changes (netlink.events) undo it (needed), and the thread that repairs them at once
(KernelWatch), leaving the periodic reconcile a rare backstop.

The agent's own changes are announced like anyone's. They never need a repair because the agent
only ever writes what it wants: an announced entry equal to the wanted one, or the removal of an
entry it no longer wants, is its own doing (or harmless); only the last announcement about each
object counts, so a removal followed by the agent's re-adding is no repair either.
"""

import collections
import logging
import os
import select
import threading
import time

from .netlink.events import AddressEvent, FdbEvent, LinkEvent, NeighbourEvent, Overflow, RouteEvent

LOG = logging.getLogger("flanneld")

# device_*: the backend's device (index None: no device); device_routes: destinations through the
# device whose loss needs the device repaired (udp's Network); routes {dst: netlink.Route},
# neighbours {ip: mac} and fdb {mac: dst}: the peers' entries, IPv4 and IPv6 (on either device);
# underlay_*: the external interface; device_address6: the device's IPv6 address on a dual-stack
# network; device6_*: vxlan's IPv6-underlay device flannel-v6.<VNI>, when it runs one.
Owned = collections.namedtuple("Owned", "device_index device_name device_mtu device_mac device_address "
                               "device_routes routes neighbours fdb underlay_index underlay_mtu "
                               "device_address6 device6_index device6_name",
                               defaults=(None, None, None))
# The metric the kernel gives an IPv6 route added without one (IPv4's is 0).
IPV6_DEFAULT_METRIC = 1024
# full: events were lost; device: the device needs repairing (then every peer is programmed
# again); underlay_mtu: the external interface's new MTU, or None; underlay_addresses: its
# addresses changed; routes, neighbours ([(ip, mac)]) and fdb ([(mac, dst)]): entries to restore.
Repairs = collections.namedtuple("Repairs", "full device underlay_mtu underlay_addresses routes neighbours fdb")
# More repairs of one object than this within FIGHT_WINDOW seconds: something keeps undoing them
# (another program managing the same entry); it is left to the reconcile instead of fought over.
FIGHT_LIMIT = 10
FIGHT_WINDOW = 1.0


def _key(event):
    if isinstance(event, LinkEvent):
        return ("link", event.index)
    if isinstance(event, AddressEvent):
        return ("address", event.index, event.address)
    if isinstance(event, NeighbourEvent):
        return ("neighbour", event.index, event.ip)
    if isinstance(event, FdbEvent):
        return ("fdb", event.index, event.mac)
    if isinstance(event, RouteEvent):
        return ("route", event.route.dst, event.metric)
    return ("overflow",)


def needed(events, owned):
    """The Repairs the announced `events` call for, given what the agent owns; None when none."""
    latest = collections.OrderedDict()
    for event in events:
        key = _key(event)
        latest.pop(key, None)
        latest[key] = event
    full = device = underlay_addresses = False
    underlay_mtu = None
    devices = (owned.device_index,) if owned.device6_index is None else (owned.device_index, owned.device6_index)
    routes, neighbours, fdb = [], [], []
    for event in latest.values():
        if isinstance(event, Overflow):
            full = True
        elif isinstance(event, LinkEvent):
            if owned.device6_index is not None and event.index == owned.device6_index:
                device |= event.removed or event.name != owned.device6_name or not event.up
            elif owned.device6_name and event.name == owned.device6_name and not event.removed:
                device = True
            elif event.index == owned.device_index:
                device |= event.removed or event.name != owned.device_name or not event.up or \
                    event.mtu != owned.device_mtu or bool(owned.device_mac and event.mac != owned.device_mac)
            elif event.name == owned.device_name and owned.device_name and not event.removed:
                device = True  # made again by someone else: another index
            elif event.index == owned.underlay_index and not event.removed and event.mtu != owned.underlay_mtu:
                underlay_mtu = event.mtu
        elif isinstance(event, AddressEvent):
            if event.index in devices and event.removed and event.address in (owned.device_address,
                                                                              owned.device_address6):
                device = True
            elif event.index == owned.underlay_index and ":" not in (event.address or ""):
                underlay_addresses = True  # the IPv4 address in use may have gone
        elif isinstance(event, NeighbourEvent):
            wanted = owned.neighbours.get(event.ip) if event.index in devices else None
            if wanted and (event.removed or not event.permanent or (event.mac or "").lower() != wanted):
                neighbours.append((event.ip, wanted))
        elif isinstance(event, FdbEvent):
            wanted = owned.fdb.get((event.mac or "").lower()) if event.index in devices else None
            if wanted and (event.removed == (event.dst == wanted)):  # ours removed, or another dst put in
                fdb.append((event.mac.lower(), wanted))
        elif isinstance(event, RouteEvent) and \
                event.metric == (IPV6_DEFAULT_METRIC if ":" in event.route.dst else 0):
            wanted = owned.routes.get(event.route.dst)
            if wanted is not None and (event.removed == (event.route == wanted)):
                routes.append(wanted)
            elif event.removed and event.route.dst in owned.device_routes and \
                    event.route.index == owned.device_index:
                device = True
    repairs = Repairs(full, device, underlay_mtu, underlay_addresses, routes, neighbours, fdb)
    return repairs if any(repairs) else None


class KernelWatch:
    """A thread that reads kernel notifications and repairs what they undid, at once.

    `owned()` says what the agent owns now (None while it owns nothing, e.g. before its lease);
    `apply(repairs)` makes the repairs. Both run under `lock`, which the agent's loop holds while it
    changes its backend or peers: the events are read after taking it, so they always describe
    changes made before what owned() returns."""

    def __init__(self, source, lock, owned, apply, clock=time.monotonic):
        self.source = source
        self.lock = lock
        self.owned = owned
        self.apply = apply
        self.clock = clock
        self._stop = threading.Event()
        self._thread = None
        self._recent = collections.deque()  # (time, repaired object) within FIGHT_WINDOW
        self._left_alone = set()

    def start(self):
        self._wake = os.pipe()  # stop() writes to it: the thread sleeps in select() until needed
        self._thread = threading.Thread(target=self._run, name="kernel-events", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            os.write(self._wake[1], b"x")
            self._thread.join(5)
            for fd in self._wake:
                os.close(fd)
        self.source.close()

    def _run(self):
        while not self._stop.is_set():
            try:
                readable = select.select([self.source.fileno(), self._wake[0]], [], [])[0]
                if self.source.fileno() in readable and not self._stop.is_set():
                    self.step()
            except Exception as error:  # the loop's reconcile still repairs: never die silently
                LOG.exception("kernel events: %s; the periodic reconcile stays the backstop", error)
                self._stop.wait(1.0)

    def step(self):
        """Read what is queued and repair; returns the Repairs made, or None."""
        with self.lock:
            events = self.source.read()
            owned = self.owned()
            if owned is None or not events:
                return None
            repairs = needed(events, owned)
            if repairs is None:
                return None
            repairs = self._without_fights(repairs)
            if any(repairs):
                self.apply(repairs)
            return repairs

    def _without_fights(self, repairs):
        """Drop the entries repaired FIGHT_LIMIT times within FIGHT_WINDOW s (said once each)."""
        now = self.clock()
        while self._recent and now - self._recent[0][0] > FIGHT_WINDOW:
            self._recent.popleft()
        counts = collections.Counter(item for _time, item in self._recent)
        kept = {}
        for field in ("routes", "neighbours", "fdb"):
            kept[field] = []
            for item in getattr(repairs, field):
                if counts[item] >= FIGHT_LIMIT:
                    if item not in self._left_alone:
                        self._left_alone.add(item)
                        LOG.warning("kernel events: %s keeps being undone (%d repairs within %.0f s); leaving it "
                                    "to the periodic reconcile", item, FIGHT_LIMIT, FIGHT_WINDOW)
                    continue
                self._recent.append((now, item))
                kept[field].append(item)
        return repairs._replace(**kept)


def repair(repairs, backend, peers):
    """Make `repairs` with `backend` for `peers` ({subnet: Lease}); returns the changes. A lost
    device or lost events need the whole sync (device, then every peer); entries are written
    one by one."""
    if repairs.full or repairs.device or backend.device_replaced():
        return backend.sync(peers)
    return backend.restore(repairs.routes, repairs.neighbours, repairs.fdb)
