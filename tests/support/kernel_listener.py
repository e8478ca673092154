"""A host's kernel notifications, timestamped as they arrive, for the repair tests and the bench."""

import threading
import time

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.netlink.events import KernelEvents, RouteEvent


class Listener:
    """The host's kernel notifications, timestamped as they arrive (a thread in the test process,
    its socket in the host's namespace); `kernel` is an IPRoute in that namespace too."""

    def __init__(self, host):
        pyroute2_netns.pushns(host.ns)
        try:
            self.source, self.kernel = KernelEvents(), IPRoute()
        finally:
            pyroute2_netns.popns()
        self.seen = []  # (time.monotonic(), event)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            if self.source.wait(0.2):
                now = time.monotonic()
                events = self.source.read()
                with self._lock:
                    self.seen.extend((now, event) for event in events)

    def first_after(self, since, matches):
        """The time of the first event after `since` that `matches`, or None."""
        with self._lock:
            return next((when for when, event in self.seen if when >= since and matches(event)), None)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.source.close()
        self.kernel.close()

    def routes_back(self, since, destinations):
        """When the last of `destinations` was announced again after `since`, or None."""
        times = [self.first_after(since, lambda event, dst=dst: isinstance(event, RouteEvent) and not event.removed
                                  and event.route.dst == dst) for dst in destinations]
        return None if None in times else max(times)
