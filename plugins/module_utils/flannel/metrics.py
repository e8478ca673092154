"""The agent's Prometheus metrics, served as /metrics through prometheus_client.

The daemon, the registry and the backends report events here with one call each (renewals,
watch events, programming latency, repairs, etcd requests). Everything that is state (the lease
and its expiry, peers, bad leases, the config, health) is read from the Agent when scraped, so a
scrape never waits on etcd and answers while etcd is down.

Until enable() runs, every function is a no-op and prometheus_client is never imported: the
Ansible modules share the registry code and need neither.
"""

import functools
import time

from .changes import ADDRESS, COMMAND, DEVICE, FDB, MASQUERADE, NEIGHBOUR, PEER, ROUTE, SUBNET_ENV, WORKER

# COMMAND: an extension backend's command that failed, run again by the reconcile.
REPAIR_KINDS = (ROUTE, NEIGHBOUR, FDB, SUBNET_ENV, MASQUERADE, DEVICE, PEER, COMMAND)
# The repair counter's kind for a Change's kind that has no series of its own: a device's
# addresses and the udp backend's workers are parts of the device.
REPAIR_KIND_OF = {ADDRESS: DEVICE, WORKER: DEVICE}
EVENT_OUTCOMES = ("handled", "skipped")
ETCD_OPERATIONS = ("get_config", "put_config", "list_leases", "get_lease", "create_lease", "update_lease",
                   "delete_lease", "claim_public_ip", "watch_leases")
# Event-to-kernel latency is a few ms on an idle host and up to ~0.2 s with 50 agents on 2 cores.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_active = None  # the _Metrics of this process once enable() ran


class _AgentCollector:
    """The agent's state, read from its parts at scrape time (daemon.py: in_force, keeper, peer_table)."""

    def __init__(self, agent):
        self.agent = agent

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        agent = self.agent
        yield GaugeMetricFamily("flannel_healthy", "1 when /healthz answers 200: a lease is held and the backend "
                                "programmed", value=1 if agent.health()[0] else 0)
        yield GaugeMetricFamily("flannel_bad_leases", "Keys under subnets/ skipped now for holding no usable lease "
                                "(as counted on /healthz)", value=agent.bad_leases.count)
        yield CounterMetricFamily("flannel_bad_lease_skips", "Bad leases read and skipped since the start (a key "
                                  "counts at every listing and watch event that reads it)",
                                  value=agent.bad_leases.total)
        config, lease, peer_list = agent.in_force.config, agent.keeper.lease, list(agent.peer_table.peers.items())
        if config is not None:
            yield InfoMetricFamily("flannel_config", "The network config in force", value={
                "network": str(config.network), "subnet_len": str(config.subnet_len),
                "backend": config.backend.type,
                "vni": str(config.backend.as_dict().get("VNI", ""))})
            peers = GaugeMetricFamily("flannel_peers", "Other hosts' leases this host routes to, by their backend",
                                      labels=["backend"])
            counts = {config.backend.type: 0}
            for _subnet, peer in peer_list:
                backend = peer.attrs.backend_type or "udp"
                counts[backend] = counts.get(backend, 0) + 1
            for backend, count in sorted(counts.items()):
                peers.add_metric([backend], count)
            yield peers
        handshakes = getattr(agent.in_force.backend, "handshakes", None)
        if handshakes is not None:
            yield self._handshake_ages(handshakes(), peer_list)
        if lease is not None:
            yield InfoMetricFamily("flannel_lease", "This host's lease", value={
                "subnet": str(lease.subnet), "public_ip": lease.attrs.public_ip,
                "vtep_mac": lease.attrs.vtep_mac or ""})
            expires_at = agent.keeper.expires_at
            remaining = float("inf") if expires_at is None else max(expires_at - agent.clock(), 0.0)
            yield GaugeMetricFamily("flannel_lease_expiry_seconds", "Seconds until the lease expires unless renewed "
                                    "(+Inf for an operator's reservation without TTL)", value=remaining)

    @staticmethod
    def _handshake_ages(handshakes, peer_list):
        """The wireguard backend's seconds since each peer's last handshake (+Inf: none yet)."""
        from prometheus_client.core import GaugeMetricFamily

        ages = GaugeMetricFamily("flannel_wireguard_handshake_age_seconds", "Seconds since the last WireGuard "
                                 "handshake with each peer (+Inf: none yet)", labels=["subnet", "public_ip"])
        now = time.time()
        peers = dict((str(subnet), lease) for subnet, lease in peer_list)
        for subnet, when in sorted(handshakes.items()):
            peer = peers.get(subnet)
            ages.add_metric([subnet, peer.attrs.public_ip if peer else ""],
                            max(now - when, 0.0) if when else float("inf"))
        return ages


class _Metrics:
    def __init__(self, agent):
        import prometheus_client
        from prometheus_client import CollectorRegistry, Counter, Histogram

        from .lease import IDENTITY_KINDS

        prometheus_client.disable_created_metrics()  # no _created series: counters start with the process
        registry = self.registry = CollectorRegistry(auto_describe=True)
        prometheus_client.ProcessCollector(registry=registry)
        prometheus_client.PlatformCollector(registry=registry)
        prometheus_client.GCCollector(registry=registry)
        registry.register(_AgentCollector(agent))
        self.renewals = Counter("flannel_lease_renewals", "Lease renewals written to etcd", registry=registry)
        self.reacquisitions = Counter("flannel_lease_reacquisitions", "Leases re-acquired after the own lease "
                                      "vanished, expired or was taken", registry=registry)
        self.events = Counter("flannel_watch_events", "Lease changes read from the etcd watch, handled or "
                              "skipped (a malformed key or a bad lease)", ["outcome"], registry=registry)
        self.latency = Histogram("flannel_event_programming_seconds", "Seconds from a lease event read on the "
                                 "watch to its peer's kernel entries programmed", buckets=LATENCY_BUCKETS,
                                 registry=registry)
        self.repairs = Counter("flannel_reconcile_repairs", "Entries restored or removed on kernel events or by the periodic reconcile, "
                               "by kind", ["kind"], registry=registry)
        self.etcd_requests = Counter("flannel_etcd_requests", "Registry operations sent to etcd, by operation",
                                     ["operation"], registry=registry)
        self.etcd_errors = Counter("flannel_etcd_request_errors", "Registry operations that failed (etcd "
                                   "unreachable, refusing us, or answering an error), by operation", ["operation"],
                                   registry=registry)
        self.conflicts = Counter("flannel_conflicting_leases_skipped", "Leases skipped because another live lease "
                                 "(or this host) already holds their identity, by its kind (VtepMAC, PublicIP, "
                                 "PublicKey, IPv6Subnet)", ["identity"], registry=registry)
        for kind in IDENTITY_KINDS:
            self.conflicts.labels(kind)
        for outcome in EVENT_OUTCOMES:  # every series exists from the start, at 0
            self.events.labels(outcome)
        for kind in REPAIR_KINDS:
            self.repairs.labels(kind)
        for operation in ETCD_OPERATIONS:
            self.etcd_requests.labels(operation)
            self.etcd_errors.labels(operation)


def enable(agent):
    """Start counting for `agent` (an Agent); returns render, which makes the /metrics page."""
    global _active
    _active = _Metrics(agent)
    return render


def disable():
    global _active
    _active = None


def render():
    """(status, content type, body) of the /metrics page."""
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    return 200, CONTENT_TYPE_LATEST, generate_latest(_active.registry)


def lease_renewed():
    if _active:
        _active.renewals.inc()


def lease_reacquired():
    if _active:
        _active.reacquisitions.inc()


def watch_event(events, skipped):
    """One answer of the watch: its events, and the (key, reason) it skipped or None."""
    if _active:
        if skipped:  # a bad lease: the removal it may yield is part of skipping it
            _active.events.labels("skipped").inc()
        elif events:
            _active.events.labels("handled").inc(len(events))


def conflicting_lease(kind):
    """A lease was skipped: its identity of `kind` belongs to another lease (peer_identity.py)."""
    if _active:
        _active.conflicts.labels(kind).inc()


def peer_programmed(since):
    """A peer's kernel entries were just programmed for an event read at `since` (time.monotonic())."""
    if _active:
        _active.latency.observe(time.monotonic() - since)


def repaired(changes):
    """Count reconcile repairs: `changes` are Changes (changes.py), counted by their kind.
    Masquerade rules are restored as a set (the rest deleted, all appended): each rule appended counts."""
    if _active:
        for change in changes:
            if change.kind == MASQUERADE and change.action != "added":
                continue
            _active.repairs.labels(REPAIR_KIND_OF.get(change.kind, change.kind)).inc()


def etcd_operation(operation, failure, answers=()):
    """Decorate a registry method: each call counts as a request of `operation`, and one that
    raises `failure` (but not one of `answers`) as an error."""
    def decorate(method):
        @functools.wraps(method)
        def counted(*args, **kwargs):
            if _active is None:
                return method(*args, **kwargs)
            _active.etcd_requests.labels(operation).inc()  # when sent: a watch may wait for seconds
            try:
                return method(*args, **kwargs)
            except failure as error:
                if not isinstance(error, answers):
                    _active.etcd_errors.labels(operation).inc()
                raise
        return counted
    return decorate
