"""Untrusted etcd answers, second round (pure logic: an in-memory registry, no etcd, no kernel):
strict lease JSON, PublicIPs that are an on-link prefix's network or broadcast address, the
bad-lease gauge beside its counter, the full-space message, and retries that are loop turns with
a backoff, never recursion. The built agent against a misbehaving etcd: tests/agent."""

import logging
import random

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.bad_leases import BadLeases
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.cli import parse_args
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.daemon import Agent
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import (
    Lease, LeaseAttrs, OutOfSubnets, acquire_lease, checked_lease, onlink_address_problem)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease_keeping import Backoff
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import (
    LeaseEvent, LeaseListing, UnreadableKeyRemoved)
from test_event_handling import (CONFIG, OWN, OWN_SUBNET, PEER, PEER_SUBNET, FakeRegistry, RecordingBackend,
                                 start_backend)

KEY = "/coreos.com/network/subnets/"


# ---- strict JSON -------------------------------------------------------------------------------

@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant):
    text = '{"PublicIP":"192.168.205.11","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:00:00:00:00:11","x":%s}}'
    with pytest.raises(ValueError) as caught:
        LeaseAttrs.from_json(text % constant)
    assert str(caught.value) == ("lease value is not JSON: %s is not a JSON number (JSON has no NaN or Infinity)"
                                 % constant)
    assert LeaseAttrs.from_json(text % "1.5").vtep_mac == "0e:00:00:00:00:11"  # numbers stay numbers


# ---- a PublicIP that is an on-link prefix's network or broadcast address ------------------------

ONLINK = {IPNetwork("192.168.205.10/24"), IPNetwork("100.64.0.1/31"), IPNetwork("203.0.113.7/32")}


@pytest.mark.parametrize("public_ip, problem", [
    ("192.168.205.255", "192.168.205.255 is the broadcast address of the on-link prefix 192.168.205.0/24"),
    ("192.168.205.0", "192.168.205.0 is the network address of the on-link prefix 192.168.205.0/24"),
    ("192.168.205.254", None),
    ("100.64.0.0", None),  # a /31 has neither (RFC 3021): both addresses are hosts
    ("100.64.0.1", None),
    ("203.0.113.7", None),
    ("192.168.206.255", None),  # another prefix's broadcast: this host cannot judge it
])
def test_onlink_network_and_broadcast_addresses_are_refused(public_ip, problem):
    assert onlink_address_problem(public_ip, ONLINK) == problem
    lease = Lease(PEER_SUBNET, LeaseAttrs(public_ip, "vxlan", "0e:00:00:00:00:11"))
    if problem is None:
        assert checked_lease(lease, CONFIG, ONLINK) is lease
        return
    for config in (CONFIG, None):  # the rule needs no network config
        with pytest.raises(ValueError) as caught:
            checked_lease(lease, config, ONLINK)
        assert str(caught.value) == "PublicIP " + problem
    assert checked_lease(lease, CONFIG) is lease  # without the host's prefixes (the modules) nothing to judge


# ---- the bad-lease gauge and counter -----------------------------------------------------------

def test_gauge_follows_the_keys_skipped_now_and_the_counter_every_skip(caplog):
    caplog.set_level("WARNING", logger="test")
    bad = BadLeases(logging.getLogger("test"))
    bad.listed([(KEY + "junk", "not a key"), (KEY + "10.20.0.0-20", "VtepMAC"), (KEY + "10.40.0.0-20", "JSON")])
    assert (bad.count, bad.total) == (3, 3)
    # The watch: a bad key deleted, one fixed, an unreadable key deleted, a new bad value.
    bad.follow([LeaseEvent(IPNetwork("10.20.0.0/20"), None)], None, lambda subnet: KEY + "%s-%d" % (
        subnet.ip, subnet.prefixlen))
    bad.follow([LeaseEvent(IPNetwork("10.40.0.0/20"), Lease(IPNetwork("10.40.0.0/20"), PEER))], None,
               lambda subnet: KEY + "10.40.0.0-20")
    bad.follow([UnreadableKeyRemoved(KEY + "junk")], None, None)
    assert (bad.count, bad.total) == (0, 3)
    removed = [LeaseEvent(IPNetwork("10.50.0.0/20"), None)]
    bad.follow(removed, (KEY + "10.50.0.0-20", "VtepMAC"), lambda subnet: KEY + "10.50.0.0-20")
    assert (bad.count, bad.total) == (1, 4)  # a bad value is a removal and a skip: still skipped
    # A listing recomputes the gauge; a key still bad is not logged again.
    bad.listed([(KEY + "10.50.0.0-20", "VtepMAC")])
    assert (bad.count, bad.total) == (1, 5)
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("skipping %s10.50.0.0-20: VtepMAC" % KEY) == 1 and len(messages) == 4
    bad.listed([])
    assert (bad.count, bad.total) == (0, 5)


def test_memory_of_logged_keys_is_bounded():
    bad = BadLeases(logging.getLogger("test"), limit=3)
    for number in range(10):
        bad.listed([(KEY + "junk%d" % number, "not a key")])
    bad.listed([(KEY + "junk%d" % number, "not a key") for number in range(10)])
    assert bad.count == 10 and len(bad._logged) == 3


def test_agent_reports_the_keys_skipped_now(agent, registry):
    registry.skipped = [(KEY + "junk", "not a subnet lease key"), (KEY + "10.40.0.0-20", "VtepMAC")]
    agent.resync()
    assert agent.health()[1].endswith("bad leases skipped: 2") and agent.bad_leases.total == 2
    registry.skipped = []  # an operator deleted them while the watch was not looking
    agent.resync()
    assert agent.health()[1].endswith("config in force %s" % CONFIG.digest())
    assert agent.bad_leases.count == 0 and agent.bad_leases.total == 2


# ---- a full subnet space -----------------------------------------------------------------------

def test_full_space_names_the_keys_that_hold_no_lease():
    registry = FakeRegistry()
    candidates = list(CONFIG.candidate_subnets())
    registry._store(candidates[0], PEER, 86400)
    junk = candidates[1:]
    registry.list_leases = lambda config=None: LeaseListing(
        list(registry.leases.values()), registry.index, [(KEY + str(subnet), "not JSON") for subnet in junk],
        [lease.subnet for lease in registry.leases.values()] + junk + [IPNetwork("192.168.0.0/24")])
    with pytest.raises(OutOfSubnets) as caught:
        acquire_lease(registry, CONFIG, OWN, rng=random.Random(1))
    assert str(caught.value) == (
        "no free subnet: every /20 between 10.10.0.0 and 10.99.0.0 has a key; %d keys in range hold no valid lease "
        "(delete them to free their subnets)" % len(junk))


# ---- retries: turns of the loop with a backoff ---------------------------------------------------

def test_backoff_grows_while_failures_repeat_and_starts_again_after_quiet():
    now = [0.0]
    backoff = Backoff(lambda: now[0])
    delays = []
    for _failure in range(8):
        delays.append(backoff.failed())
        now[0] += delays[-1] + 0.1
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    now[0] += 91.0
    assert backoff.failed() == 0.0


class CountingRegistry(FakeRegistry):
    """`forget_own`: listings never hold this host's lease; `watch_back`: every watch answers 10
    below the index asked."""

    def __init__(self, forget_own=False, watch_back=False):
        super().__init__()
        self.forget_own, self.watch_back = forget_own, watch_back
        self.calls = []

    def list_leases(self, config=None):
        self.calls.append("list")
        listing = super().list_leases(config)
        if self.forget_own:
            listing.leases = [lease for lease in listing.leases if lease.attrs != OWN]
        return listing

    def watch_leases(self, after_index, timeout, config=None, with_config=False):
        self.calls.append("watch")
        assert self.watch_back, "not reached while the lease is never listed"
        return [LeaseEvent(PEER_SUBNET, self.leases[PEER_SUBNET])], after_index - 10, None


class TurnCounter:
    """The agent's wait in these tests: records each wait and the registry calls made since the
    last one, and stops the agent (`agent`, set once it exists) after `turns` waits."""

    def __init__(self, registry, turns):
        self.registry, self.turns = registry, turns
        self.agent = None
        self.waits, self.calls = [], []

    def __call__(self, seconds):
        self.waits.append(seconds)
        self.calls.append(list(self.registry.calls))
        del self.registry.calls[:]
        if len(self.waits) >= self.turns:
            self.agent.stop()
            return True
        return False


def _run_loop(agent, counter):
    """Run the agent's loop until `counter` stops it; returns the waits and the registry calls
    made between them."""
    counter.agent = agent
    agent.follower.check_stored = lambda: None  # the config is not what this test is about
    agent.loop()
    return counter.waits, counter.calls


@pytest.mark.parametrize("forget_own, watch_back", [(True, False), (False, True)], ids=["lease-never-listed",
                                                                                        "index-backwards"])
def test_repeated_failures_are_loop_turns_with_a_growing_wait(tmp_path, caplog, forget_own, watch_back):
    registry = CountingRegistry(forget_own, watch_back)
    counter = TurnCounter(registry, 7)
    agent = _agent(registry, tmp_path, wait=counter)
    agent.hangup()  # a re-listing at the next step, as after start-up
    waits, calls = _run_loop(agent, counter)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    # Between two waits, one turn: a re-acquisition and one listing, or one listing and one watch.
    expected = ["list", "list"] if forget_own else ["list", "watch"]
    assert all(turn == expected for turn in calls[1:]), calls
    assert not agent.health()[0] and "(8 times in a row; next try in 30 s)" in agent.health()[1]
    assert "unexpected error" not in caplog.text


def _agent(registry, tmp_path, wait=None):
    """An agent that holds OWN_SUBNET beside one peer, on `registry`."""
    options = parse_args(["-subnet-file=%s" % (tmp_path / "subnet.env"), "-host-id=test"], environ={})
    running = Agent(options, registry, wait=wait)
    start_backend(running, RecordingBackend())
    registry._store(PEER_SUBNET, PEER, 86400)
    running.keeper.install(registry._store(OWN_SUBNET, OWN, 86400))
    running.reconcile_at = running.keeper.renew_at = float("inf")
    return running


@pytest.fixture
def registry():
    return FakeRegistry()


@pytest.fixture
def agent(registry, tmp_path):
    return _agent(registry, tmp_path)
