"""The /metrics page made from an agent's state and counters (pure logic: a stand-in agent, no
etcd, no kernel), parsed back with prometheus_client's own parser; and the -metrics flags."""

import types

import pytest
from netaddr import IPNetwork
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.netlab.flannel.plugins.module_utils.flannel import metrics
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.changes import (
    COMMAND, FDB, MASQUERADE, NEIGHBOUR, ROUTE, SUBNET_ENV, Change)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.cli import UsageError, parse_args
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import Lease, LeaseAttrs

CONFIG = parse_network_config('{"Network": "10.0.0.0/8", "SubnetLen": 20, "Backend": {"Type": "vxlan", "VNI": 100}}')


class StandInAgent:
    """The agent's parts that /metrics reads: the config and backend in force, the lease keeper's
    lease and expiry, the peer table's peers."""

    def __init__(self):
        self.in_force = types.SimpleNamespace(config=CONFIG, backend=None)
        lease = Lease(IPNetwork("10.20.0.0/20"), LeaseAttrs("192.168.205.10", "vxlan", "0e:00:00:00:00:10"),
                      ttl=86400, modified_index=7)
        self.keeper = types.SimpleNamespace(lease=lease, expires_at=1000.0 + 3600)
        peers = [Lease(IPNetwork("10.30.0.0/20"), LeaseAttrs("192.168.205.11", "vxlan", "0e:00:00:00:00:11")),
                 Lease(IPNetwork("10.40.0.0/20"), LeaseAttrs("192.168.205.12", "host-gw"))]
        self.peer_table = types.SimpleNamespace(peers=dict((peer.subnet, peer) for peer in peers))
        self.now = 1000.0
        self.bad_leases = types.SimpleNamespace(count=2, total=5)  # keys skipped now, skips since the start

    def clock(self):
        return self.now

    def health(self):
        return True, "lease 10.20.0.0/20, 2 peers"


@pytest.fixture
def agent():
    agent = StandInAgent()
    metrics.enable(agent)
    yield agent
    metrics.disable()


def _samples():
    status, content_type, body = metrics.render()
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    return dict(((sample.name, tuple(sorted(sample.labels.items()))), sample.value)
                for family in text_string_to_metric_families(body.decode()) for sample in family.samples)


def test_state_is_read_from_the_agent_when_scraped(agent):
    samples = _samples()
    lease = (("public_ip", "192.168.205.10"), ("subnet", "10.20.0.0/20"), ("vtep_mac", "0e:00:00:00:00:10"))
    assert samples[("flannel_lease_info", lease)] == 1
    assert samples[("flannel_lease_expiry_seconds", ())] == 3600
    assert samples[("flannel_peers", (("backend", "vxlan"),))] == 1
    assert samples[("flannel_peers", (("backend", "host-gw"),))] == 1
    config = (("backend", "vxlan"), ("network", "10.0.0.0/8"), ("subnet_len", "20"), ("vni", "100"))
    assert samples[("flannel_config_info", config)] == 1
    assert samples[("flannel_bad_leases", ())] == 2
    assert samples[("flannel_bad_lease_skips_total", ())] == 5
    assert samples[("flannel_healthy", ())] == 1
    assert samples[("process_resident_memory_bytes", ())] > 0
    agent.now += 600
    agent.peer_table.peers.clear()
    agent.keeper.expires_at = None
    samples = _samples()
    assert samples[("flannel_lease_expiry_seconds", ())] == float("inf")
    assert samples[("flannel_peers", (("backend", "vxlan"),))] == 0  # the config's backend is always there
    assert ("flannel_peers", (("backend", "host-gw"),)) not in samples


@metrics.etcd_operation("watch_leases", ConnectionError)
def _watch_leases(fail):
    """A registry request as the registries count theirs: one sent, and an error when it fails."""
    if fail:
        raise ConnectionError("etcd unreachable")


def test_counters_start_at_zero_and_count(agent):
    samples = _samples()
    for kind in metrics.REPAIR_KINDS:
        assert samples[("flannel_reconcile_repairs_total", (("kind", kind),))] == 0
    assert samples[("flannel_etcd_request_errors_total", (("operation", "watch_leases"),))] == 0
    assert not [name for name, _labels in samples if name.endswith("_created")]
    metrics.lease_renewed()
    metrics.lease_reacquired()
    metrics.watch_event(["an event"], None)
    metrics.watch_event([], ("/coreos.com/network/subnets/junk", "not a subnet key"))
    metrics.watch_event([], None)  # a watch that timed out is no event
    metrics.repaired([Change(NEIGHBOUR, "added", "neighbour 10.30.0.0 lladdr 0e:00:00:00:00:11"),
                      Change(FDB, "removed", "fdb 0e:00:00:00:00:11 dst 192.168.205.11"),
                      Change(ROUTE, "added", "route 10.30.0.0/20 via 10.30.0.0 dev flannel.100 onlink"),
                      Change(ROUTE, "added", "udp route 10.30.0.0/20 via 192.168.205.11:8285")])
    metrics.repaired([Change(SUBNET_ENV, "rewrote", "/run/flannel/subnet.env")])
    metrics.repaired([Change(COMMAND, "queued", "SubnetAddCommand for peer 10.30.0.0/20 at 192.168.205.11")])
    metrics.repaired([Change(MASQUERADE, "deleted", "-t nat POSTROUTING -s 10.0.0.0/8 -d 10.0.0.0/8 -j RETURN"),
                      Change(MASQUERADE, "added", "-t nat POSTROUTING -s 10.0.0.0/8 -d 10.0.0.0/8 -j RETURN")])
    _watch_leases(False)
    with pytest.raises(ConnectionError):
        _watch_leases(True)
    samples = _samples()
    assert samples[("flannel_lease_renewals_total", ())] == 1
    assert samples[("flannel_lease_reacquisitions_total", ())] == 1
    assert samples[("flannel_watch_events_total", (("outcome", "handled"),))] == 1
    assert samples[("flannel_watch_events_total", (("outcome", "skipped"),))] == 1
    assert [samples[("flannel_reconcile_repairs_total", (("kind", kind),))] for kind in metrics.REPAIR_KINDS] == [
        2, 1, 1, 1, 1, 0, 0, 1]
    assert samples[("flannel_etcd_requests_total", (("operation", "watch_leases"),))] == 2
    assert samples[("flannel_etcd_request_errors_total", (("operation", "watch_leases"),))] == 1


class Refused(Exception):
    pass


class Answer(Refused):
    pass


def test_registry_operations_count_failures_but_not_answers(agent):
    @metrics.etcd_operation("get_lease", Refused, (Answer,))
    def operation(outcome):
        if outcome is not None:
            raise outcome
        return "lease"

    assert operation(None) == "lease"
    for outcome in (Answer(), Refused(), KeyboardInterrupt()):
        with pytest.raises(type(outcome)):
            operation(outcome)
    samples = _samples()
    assert samples[("flannel_etcd_requests_total", (("operation", "get_lease"),))] == 4
    assert samples[("flannel_etcd_request_errors_total", (("operation", "get_lease"),))] == 1


def test_programming_latency_lands_in_its_bucket(agent, monkeypatch):
    monkeypatch.setattr(metrics.time, "monotonic", lambda: 100.003)
    metrics.peer_programmed(100.0)
    samples = _samples()
    assert samples[("flannel_event_programming_seconds_count", ())] == 1
    assert samples[("flannel_event_programming_seconds_bucket", (("le", "0.002"),))] == 0
    assert samples[("flannel_event_programming_seconds_bucket", (("le", "0.005"),))] == 1


def test_metrics_port_must_differ_from_the_healthz_port():
    with pytest.raises(UsageError, match="invalid value 8471 for -metrics-port: it is the -healthz-port"):
        parse_args(["-healthz-port=8471", "-metrics-port=8471"], environ={})
    options = parse_args(["-healthz-port=8471", "-metrics-port=9471"], environ={})
    assert (options.metrics, options.metrics_port) == (True, 9471)
    assert parse_args(["-metrics=false"], environ={}).metrics is False
    assert parse_args([], environ={"FLANNELD_METRICS": "false"}).metrics is False
    with pytest.raises(UsageError, match="-metrics-port: must be between 0"):
        parse_args(["-metrics-port=70000"], environ={})
