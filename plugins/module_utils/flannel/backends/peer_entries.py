"""What a route backend programmed per peer: up to three kernel entries (PeerEntries), and the
table of them by peer (Programmed) with the route, neighbour and FDB tables they add up to."""

import collections

# A permanent neighbour (ip, mac) and an FDB entry (mac, dst) on the vxlan device, and a Route.
PeerEntries = collections.namedtuple("PeerEntries", "neighbour fdb route")


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
    keyed = [(0, entries.route.dst, entries.route)]
    if entries.neighbour:
        keyed.append((1, entries.neighbour[0], entries.neighbour[1]))
    if entries.fdb:
        keyed.append((2, entries.fdb[0], entries.fdb[1]))
    return keyed
