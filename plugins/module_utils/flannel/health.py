"""The agent's health record: (ok, reason), answered by /healthz and the flannel_healthy metric.

Every part of the agent reports here: the loop (etcd down, retries), the lease keeper (no lease),
the config follower (a switch under way, a refused config). A change of health is logged once;
a healthy reason whose counts move with every event is updated without a log line.
"""

import logging

LOG = logging.getLogger("flanneld")


class Health:
    def __init__(self):
        self._state = (False, "starting")

    def __call__(self):
        """(ok, reason): what /healthz serves."""
        return self._state

    @property
    def ok(self):
        return self._state[0]

    def set(self, ok, reason):
        if (ok, reason) != self._state:
            LOG.info("health: %s (%s)", "ok" if ok else "unhealthy", reason)
        self._state = (ok, reason)

    def healthy(self, reason):
        """Healthy with `reason`; logged only when the agent was unhealthy before."""
        if self._state[0]:
            self._state = (True, reason)  # counts change with events: not worth a log line each
        else:
            self.set(True, reason)
