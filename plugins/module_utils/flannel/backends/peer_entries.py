"""What a route backend programmed per peer: up to three kernel entries per family (PeerEntries),
and the table of them by peer (Programmed) with the route, neighbour and FDB tables they add up to."""

import collections

# A permanent neighbour (ip, mac) and an FDB entry (mac, dst) on a vxlan device, and a Route; the
# same for the peer's IPv6 subnet on a dual-stack network (None: not routed). A neighbour and an FDB
# entry are on the link of their family's route (its gateway is the neighbour's ip): flannel.<VNI>,
# or flannel-v6.<VNI> for IPv6 over an IPv6 underlay.
PeerEntries = collections.namedtuple("PeerEntries", "neighbour fdb route neighbour6 fdb6 route6",
                                     defaults=(None, None, None))


def families(entries):
    """(neighbour, fdb, route) of each family a peer's entries route, IPv4 first."""
    found = [(entries.neighbour, entries.fdb, entries.route)] if entries.route is not None else []
    if entries.route6 is not None:
        found.append((entries.neighbour6, entries.fdb6, entries.route6))
    return found


def linked(entries):
    """({(link, ip): mac}, {(link, mac, dst)}, [Route]) of one peer's entries."""
    neighbours, fdb, routes = {}, set(), []
    for neighbour, fdb_entry, route in families(entries):
        routes.append(route)
        if neighbour:
            neighbours[(route.index, neighbour[0])] = neighbour[1]
        if fdb_entry:
            fdb.add((route.index,) + tuple(fdb_entry))
    return neighbours, fdb, routes


class Programmed(dict):
    """subnet (str) -> PeerEntries last written for that peer, and the entries they add up to
    (entries()), kept up to date as peers come and go: the kernel-events thread asks for them at
    every announcement, and rebuilding them per lease event cost O(peers)."""

    def __init__(self, *args):
        super().__init__(*args)
        self._entries = None  # (routes, neighbours, fdb), built at the first entries()
        self._shared = False  # two peers share an entry's key: rebuilt on change instead

    def __setitem__(self, key, value):
        self._account(self.get(key), -1)
        super().__setitem__(key, value)
        self._account(value, +1)

    def pop(self, key, *default):
        value = super().pop(key, *default)
        self._account(value if isinstance(value, PeerEntries) else None, -1)
        return value

    def entries(self):
        """({dst: Route}, {ip: mac}, {mac: dst}) of every programmed peer (shared: read only)."""
        if self._entries is None:
            tables, self._shared = ({}, {}, {}), False
            for entries in self.values():
                for table, key, value in _keyed(entries):
                    self._shared |= key in tables[table]
                    tables[table][key] = value
            self._entries = tables
        return self._entries

    def _account(self, entries, sign):
        """Add (+1) or take away (-1) one peer's entries from entries(), if built; when two peers
        share a key, the tables are built again at the next entries() instead."""
        if entries is None or self._entries is None:
            return
        if self._shared:
            self._entries = None
            return
        for table, key, value in _keyed(entries):
            table = self._entries[table]
            if sign < 0:
                table.pop(key, None)
            elif key in table:
                self._entries = None
                return
            else:
                table[key] = value


def _keyed(entries):
    """(table, key, value) of one peer's entries, for Programmed.entries()'s three tables."""
    keyed = []
    for neighbour, fdb, route in families(entries):
        keyed.append((0, route.dst, route))
        if neighbour:
            keyed.append((1, neighbour[0], neighbour[1]))
        if fdb:
            keyed.append((2, fdb[0], fdb[1]))
    return keyed
