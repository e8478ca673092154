"""The daemon's event handling (Agent.apply, resync, reacquire, regain_lease, and the lease keeper's
acquire) against an in-memory registry and a backend that records what it was asked to program:
pure logic, no etcd, no kernel. The agent's state is read and set through its parts (in_force,
keeper, peer_table, health). The real registry and backends are tested in tests/etcd and tests/agent."""

import pytest
from netaddr import IPNetwork
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.netlab.flannel.plugins.module_utils.flannel import metrics

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.cli import parse_args
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.daemon import Agent
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.etcd_http import RequestGate
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import (
    Lease, LeaseAttrs, OutOfSubnets)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import (
    LeaseEvent, LeaseListing, RegistryUnavailable)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.subnet_env import read_subnet_env

CONFIG = parse_network_config('{"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", '
                              '"SubnetMax": "10.99.0.0", "Backend": {"Type": "vxlan", "VNI": 100}}')
OWN = LeaseAttrs("192.168.205.10", "vxlan", "0e:00:00:00:00:10")
OWN_SUBNET = IPNetwork("10.20.0.0/20")
PEER_SUBNET = IPNetwork("10.30.0.0/20")
PEER = LeaseAttrs("192.168.205.11", "vxlan", "0e:00:00:00:00:11")
PEER_NEW_MAC = LeaseAttrs("192.168.205.11", "vxlan", "0e:00:00:00:00:99")
INTRUDER = LeaseAttrs("192.168.205.12", "vxlan", "0e:00:00:00:00:12")


class FakeRegistry:
    """etcd's v2 semantics for leases in a dict: compare-and-swap on a modified index."""

    config_key = "/coreos.com/network/config"

    def __init__(self):
        self.gate = RequestGate()
        self.leases = {}  # subnet -> Lease
        self.index = 100
        self.skipped = []
        self.failures = []  # exceptions raised, one per call, by the next create_lease calls

    def _store(self, subnet, attrs, ttl):
        self.index += 1
        self.leases[subnet] = Lease(subnet, attrs, ttl=ttl, modified_index=self.index)
        return self.leases[subnet]

    def list_leases(self, config=None):
        return LeaseListing(sorted(self.leases.values(), key=lambda lease: lease.subnet), self.index,
                            list(self.skipped))

    def create_lease(self, subnet, attrs, ttl):
        if self.failures:
            raise self.failures.pop(0)
        return None if subnet in self.leases else self._store(subnet, attrs, ttl)

    def update_lease(self, lease, attrs, ttl):
        current = self.leases.get(lease.subnet)
        if current is None or current.modified_index != lease.modified_index:
            return None
        return self._store(lease.subnet, attrs, ttl)

    def delete_lease(self, lease):
        return self.leases.pop(lease.subnet, None) is not None

    def claim_public_ip(self, public_ip, host_id, ttl):
        return None


class RecordingBackend:
    """Holds what a real backend would have programmed: subnet -> the peer's attrs."""

    def __init__(self):
        self.programmed = {}
        self.calls = []
        self.own_subnets = []

    def configure_lease(self, subnet):
        self.own_subnets.append(subnet)
        return []

    def sync(self, peers):
        self.calls.append(("sync", sorted(str(subnet) for subnet in peers)))
        self.programmed = dict((subnet, lease.attrs) for subnet, lease in peers.items())
        return []

    def add_peer(self, lease):
        self.calls.append(("add_peer", str(lease.subnet)))
        self.programmed[lease.subnet] = lease.attrs
        return ["added %s" % lease.subnet]

    def remove_peer(self, subnet):
        self.calls.append(("remove_peer", str(subnet)))
        self.programmed.pop(subnet, None)
        return ["removed %s" % subnet]

    def upkeep_in(self):
        return None  # no timer of its own, as every backend but wireguard


@pytest.fixture
def registry():
    return FakeRegistry()


@pytest.fixture
def agent(registry, tmp_path):
    """An agent that holds OWN_SUBNET and has listed one peer, PEER_SUBNET."""
    options = parse_args(["-subnet-file=%s" % (tmp_path / "subnet.env"), "-host-id=test"], environ={})
    # wait: retries go on at once instead of sleeping
    running = Agent(options, registry, clock=lambda: 1000.0, wait=lambda seconds: False)
    start_backend(running, RecordingBackend())
    registry._store(PEER_SUBNET, PEER, 86400)
    running.keeper.install(registry._store(OWN_SUBNET, OWN, 86400))
    running.resync()
    running.in_force.backend.calls = []
    return running


def start_backend(agent, backend, config=CONFIG, attrs=OWN):
    """What the config follower's start() does once the config is fetched: the config and its
    running backend in force, and the lease keeper told what to publish."""
    agent.in_force.config, agent.in_force.backend = config, backend
    agent.in_force.info = {"backend_type": attrs.backend_type, "vtep_mac": attrs.vtep_mac, "mtu": 1450}
    agent.keeper.use_backend(attrs.public_ip, agent.in_force.info)


def _event(registry, subnet, attrs):
    """The event etcd sends for a write of `attrs` at `subnet` (None: a removal)."""
    if attrs is None:
        registry.leases.pop(subnet, None)
        return LeaseEvent(subnet, None)
    return LeaseEvent(subnet, registry._store(subnet, attrs, 86400))


def _recover(agent):
    """What the loop's next step does after the lease was marked lost: re-acquire it, re-list."""
    assert agent.keeper.lost and agent.keeper.renew_at is None
    assert agent.regain_lease()
    agent.resync()
    assert agent.keeper.lost is None


# ---- apply: one watch event -------------------------------------------------------------------

def test_new_peer_is_programmed(agent, registry):
    subnet = IPNetwork("10.40.0.0/20")
    agent.apply(_event(registry, subnet, INTRUDER))
    assert agent.in_force.backend.calls == [("add_peer", "10.40.0.0/20")]
    assert agent.in_force.backend.programmed[subnet] == INTRUDER and agent.peer_table.peers[subnet].attrs == INTRUDER


def test_peer_with_changed_attributes_is_reprogrammed(agent, registry):
    agent.apply(_event(registry, PEER_SUBNET, PEER_NEW_MAC))
    assert agent.in_force.backend.calls == [("add_peer", str(PEER_SUBNET))]
    assert agent.in_force.backend.programmed[PEER_SUBNET] == PEER_NEW_MAC


def test_peer_renewal_programs_nothing(agent, registry):
    agent.apply(_event(registry, PEER_SUBNET, PEER))
    assert agent.in_force.backend.calls == []
    assert agent.peer_table.peers[PEER_SUBNET].modified_index == registry.leases[PEER_SUBNET].modified_index


def test_removed_peer_is_unprogrammed(agent, registry):
    agent.apply(_event(registry, PEER_SUBNET, None))
    assert agent.in_force.backend.calls == [("remove_peer", str(PEER_SUBNET))]
    assert agent.in_force.backend.programmed == {} and agent.peer_table.peers == {}


def test_removal_of_an_unknown_subnet_changes_nothing(agent, registry):
    agent.apply(_event(registry, IPNetwork("10.40.0.0/20"), None))
    assert agent.in_force.backend.calls == [] and list(agent.peer_table.peers) == [PEER_SUBNET]


def test_own_renewal_only_reschedules(agent, registry):
    agent.keeper.renew_at = None
    event = _event(registry, OWN_SUBNET, OWN)
    agent.apply(event)
    assert agent.keeper.lease is event.lease and agent.keeper.renew_at == 1000.0 + 86400 - 3600
    assert agent.in_force.backend.calls == [] and agent.in_force.backend.own_subnets == [OWN_SUBNET]


def test_own_lease_removed_is_reacquired_with_the_same_subnet(agent, registry):
    agent.apply(_event(registry, OWN_SUBNET, None))
    _recover(agent)
    assert registry.leases[OWN_SUBNET].attrs == OWN
    assert agent.keeper.lease is registry.leases[OWN_SUBNET]
    assert agent.in_force.backend.own_subnets == [OWN_SUBNET, OWN_SUBNET]
    assert agent.health() == (True, "lease 10.20.0.0/20, 1 peers, config in force %s" % CONFIG.digest())


def test_own_lease_overwritten_moves_to_a_free_subnet(agent, registry):
    agent.apply(_event(registry, OWN_SUBNET, INTRUDER))
    _recover(agent)
    assert registry.leases[OWN_SUBNET].attrs == INTRUDER  # the other host's lease is left alone
    moved = agent.keeper.lease.subnet
    assert moved not in (OWN_SUBNET, PEER_SUBNET) and registry.leases[moved].attrs == OWN
    assert agent.in_force.backend.own_subnets[-1] == moved
    assert read_subnet_env(agent.options.subnet_file)["FLANNEL_SUBNET"] == "%s/20" % (moved.network + 1)
    assert agent.peer_table.peers[OWN_SUBNET].attrs == INTRUDER  # and the intruder is now a peer
    assert agent.in_force.backend.programmed[OWN_SUBNET] == INTRUDER


# ---- the backend's own timer --------------------------------------------------------------------

def test_the_backends_timer_bounds_the_watch_and_its_upkeep_runs_when_due(agent):
    """The loop asks the backend when it next needs upkeep() (the wireguard backend's idle
    sessions) and waits no longer; it runs upkeep() only when due."""
    backend = agent.in_force.backend
    agent.reconcile_at = agent.keeper.claim_at = float("inf")
    agent.keeper.renew_at = None
    backend.upkeep = lambda: backend.calls.append(("upkeep",))
    backend.upkeep_in = lambda: 4.5
    assert agent._before_watch() == 4.5 and backend.calls == []
    backend.upkeep_in = lambda: 0.0
    agent._before_watch()
    assert backend.calls == [("upkeep",)]


# ---- resync: a full re-listing ----------------------------------------------------------------

def test_resync_programs_the_difference_and_marks_healthy(agent, registry, caplog):
    registry._store(PEER_SUBNET, PEER_NEW_MAC, 86400)
    added = IPNetwork("10.40.0.0/20")
    registry._store(added, INTRUDER, 86400)
    registry.skipped = [("/coreos.com/network/subnets/junk", "not a subnet lease key")]
    agent.health.set(False, "etcd unreachable")
    caplog.set_level("INFO", logger="flanneld")
    agent.resync()
    agent.resync()
    assert agent.in_force.backend.calls == [("sync", [str(PEER_SUBNET), str(added)])] * 2
    assert agent.in_force.backend.programmed == {PEER_SUBNET: PEER_NEW_MAC, added: INTRUDER}
    assert agent.index == registry.index
    assert agent.reconcile_at == 1000.0 + agent.options.reconcile_interval
    health = "lease 10.20.0.0/20, 2 peers, config in force %s, bad leases skipped: 1" % CONFIG.digest()
    assert agent.health() == (True, health)
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("skipping /coreos.com/network/subnets/junk: not a subnet lease key") == 1
    assert "peer changed: 10.30.0.0/20 now %s" % PEER_NEW_MAC in messages
    assert "peer added: 10.40.0.0/20 at 192.168.205.12" in messages


def test_resync_drops_vanished_peers(agent, registry):
    del registry.leases[PEER_SUBNET]
    agent.resync()
    assert agent.peer_table.peers == {} and agent.in_force.backend.programmed == {}


def test_resync_reacquires_a_vanished_own_lease(agent, registry):
    del registry.leases[OWN_SUBNET]
    agent.resync()
    _recover(agent)
    assert registry.leases[OWN_SUBNET].attrs == OWN and agent.keeper.lease is registry.leases[OWN_SUBNET]


def test_resync_moves_off_an_own_lease_taken_by_another_host(agent, registry):
    registry._store(OWN_SUBNET, INTRUDER, 86400)
    agent.resync()
    _recover(agent)
    assert agent.keeper.lease.subnet != OWN_SUBNET and registry.leases[agent.keeper.lease.subnet].attrs == OWN
    assert agent.in_force.backend.programmed[OWN_SUBNET] == INTRUDER


# ---- reacquire and the keeper's acquire -------------------------------------------------------------------

def test_reacquire_stopped_keeps_everything(agent, registry):
    del registry.leases[OWN_SUBNET]
    held = agent.keeper.lease
    agent.stop()
    agent.reacquire("own lease vanished")
    assert not agent.regain_lease()
    assert agent.keeper.lease is held and OWN_SUBNET not in registry.leases
    assert agent.health() == (False, "own lease vanished; re-acquiring a lease (same subnet if free)")


@pytest.mark.parametrize("failure", [OutOfSubnets(CONFIG), RegistryUnavailable("connection refused")])
def test_acquire_retries_after_a_failure(agent, registry, failure):
    del registry.leases[OWN_SUBNET]
    registry.failures = [failure]
    lease = agent.keeper.acquire(OWN_SUBNET)
    assert lease is registry.leases[OWN_SUBNET] and registry.failures == []


# ---- conflicting identities (peer_identity.py) -------------------------------------------------

COPY_SUBNET = IPNetwork("10.40.0.0/20")
COPY_OF_PEER = LeaseAttrs("192.168.205.12", "vxlan", PEER.vtep_mac)  # PEER's VtepMAC, another PublicIP


def _created(registry, subnet, attrs):
    """An event for a key etcd creates now (its created index is the newest)."""
    event = _event(registry, subnet, attrs)
    event.lease.created_index = event.lease.modified_index
    return event


def _conflicts_counted():
    _status, _type, body = metrics.render()
    return dict((sample.labels["identity"], sample.value) for family in text_string_to_metric_families(body.decode())
                for sample in family.samples if sample.name == "flannel_conflicting_leases_skipped_total")


def test_copy_of_a_peers_vtep_mac_is_skipped_logged_once_and_counted(agent, registry, caplog):
    caplog.set_level("INFO", logger="flanneld")
    metrics.enable(agent)
    try:
        agent.apply(_created(registry, COPY_SUBNET, COPY_OF_PEER))
        agent.apply(_event(registry, COPY_SUBNET, COPY_OF_PEER))  # its renewal
        agent.resync()
        assert _conflicts_counted() == {"VtepMAC": 1, "PublicIP": 0, "PublicKey": 0, "IPv6Subnet": 0}
    finally:
        metrics.disable()
    assert agent.in_force.backend.calls == [("sync", [str(PEER_SUBNET)])]
    assert agent.in_force.backend.programmed == {PEER_SUBNET: PEER} and list(agent.peer_table.peers) == [PEER_SUBNET]
    lines = [record.getMessage() for record in caplog.records if "10.40.0.0-20" in record.getMessage()]
    assert len(lines) == 1 and "10.30.0.0-20" in lines[0] and "VtepMAC 0e:00:00:00:00:11" in lines[0], lines
    assert agent.health()[1].endswith("conflicting leases skipped: 1")


def test_removing_the_copy_leaves_the_holder_programmed(agent, registry):
    agent.apply(_created(registry, COPY_SUBNET, COPY_OF_PEER))
    agent.apply(_event(registry, COPY_SUBNET, None))
    assert agent.in_force.backend.calls == [] and agent.in_force.backend.programmed == {PEER_SUBNET: PEER}
    agent.report_healthy()
    assert "conflicting" not in agent.health()[1]


def test_when_the_holder_goes_the_skipped_lease_is_programmed(agent, registry, caplog):
    caplog.set_level("INFO", logger="flanneld")
    agent.apply(_created(registry, COPY_SUBNET, COPY_OF_PEER))
    agent.apply(_event(registry, PEER_SUBNET, None))
    assert agent.in_force.backend.calls == [("remove_peer", str(PEER_SUBNET)), ("add_peer", str(COPY_SUBNET))]
    assert agent.in_force.backend.programmed == {COPY_SUBNET: COPY_OF_PEER}
    assert "lease 10.40.0.0-20 now holds its VtepMAC 0e:00:00:00:00:11: programming it" in caplog.messages


def test_a_holder_that_changes_its_mac_hands_the_old_one_to_the_next_claimant(agent, registry):
    agent.apply(_created(registry, COPY_SUBNET, COPY_OF_PEER))
    agent.apply(_event(registry, PEER_SUBNET, PEER_NEW_MAC))
    assert agent.in_force.backend.calls == [("add_peer", str(PEER_SUBNET)), ("add_peer", str(COPY_SUBNET))]
    assert agent.in_force.backend.programmed == {PEER_SUBNET: PEER_NEW_MAC, COPY_SUBNET: COPY_OF_PEER}


def test_a_lease_with_this_hosts_own_vtep_mac_is_never_programmed(agent, registry, caplog):
    copy_of_own = LeaseAttrs("192.168.205.12", "vxlan", OWN.vtep_mac)
    agent.apply(_created(registry, COPY_SUBNET, copy_of_own))
    agent.resync()
    assert agent.in_force.backend.programmed == {PEER_SUBNET: PEER}
    assert [message for message in caplog.messages if "this host's own (lease 10.20.0.0-20)" in message
            and "10.40.0.0-20" in message]


def test_a_listing_picks_the_key_created_first_whatever_its_order(agent, registry):
    """A host that starts after both leases were written agrees with one that saw them arrive."""
    registry.leases[PEER_SUBNET].created_index = 50
    copy = registry._store(COPY_SUBNET, COPY_OF_PEER, 86400)
    copy.created_index = 20  # created before PEER's key: the copy holds the MAC
    agent.resync()
    assert agent.in_force.backend.programmed == {COPY_SUBNET: COPY_OF_PEER}
