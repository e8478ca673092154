"""The keys under <prefix>/subnets the agent skips because they hold no usable lease.

Three figures, for the Agent (daemon.py): how many keys are skipped now (a gauge on /healthz and
/metrics: recomputed at every listing, followed through watch events in between), how many skips
there were in all (a counter), and which keys were logged, so that each bad key is logged once
while it stays bad, in a memory that stays bounded whatever etcd holds.
"""

import collections

# Above this many remembered keys the oldest are forgotten (and logged again if seen again).
MAX_REMEMBERED = 10000


def _printable(key):
    """A key is anyone's text: escaped and cut, so that it can never forge a log line."""
    return str(key)[:200].encode("unicode_escape").decode("ascii")


class BadLeases:
    def __init__(self, log, limit=MAX_REMEMBERED):
        self.log = log
        self.limit = limit
        self.current = {}  # key -> reason, for the keys skipped now
        self.total = 0
        self._logged = collections.OrderedDict()  # key -> reason last logged

    @property
    def count(self):
        return len(self.current)

    def listed(self, skipped):
        """A full listing's skips, [(key, reason)]: they are the keys skipped now."""
        self.current = {}
        for key, reason in skipped:
            self.skipped(key, reason)
        for key in [key for key in self._logged if key not in self.current]:
            del self._logged[key]

    def skipped(self, key, reason):
        """One key read and not used."""
        self.current[key] = reason
        self.total += 1
        if self._logged.get(key) != reason:
            self.log.warning("skipping %s: %s", _printable(key), reason)
        self._logged[key] = reason
        self._logged.move_to_end(key)
        while len(self._logged) > self.limit:
            self._logged.popitem(last=False)

    def cleared(self, key):
        """A key that was deleted or now holds a valid lease."""
        if self.current.pop(key, None) is not None:
            self._logged.pop(key, None)

    def follow(self, events, skipped, key_of):
        """One watch answer: its lease events (each clears its key, `key_of(subnet)`; a key
        deleted without being named like a lease carries its own `key`), then what it skipped
        (a bad value yields both a removal and a skip of its key)."""
        for event in events:
            if getattr(event, "key", None) is not None:
                self.cleared(event.key)
            elif event.subnet is not None:
                self.cleared(key_of(event.subnet))
        if skipped:
            self.skipped(*skipped)
