"""The built agent against etcd answers that used to make it loop or die, on namespace hosts:
a fake etcd whose index goes backwards or whose listings never hold the agent's lease (no
recursion, no spinning: the request rate stays bounded by the backoff, and the agent stays up
and says why on /healthz); junk at every free subnet key of a real etcd ("no free subnet" with
the count, retried with backoff, a lease once a key is freed); stray signals logged and ignored."""

import signal
import sys
import time
import types

import pytest
from netaddr import IPNetwork
from pyroute2 import netns as pyroute2_netns

from support.cluster import TUTORIAL_CONFIG, AgentProcess, Cluster, wait_for
from support.fake_etcd import FakeEtcd
from test_reliability import acquisition_attempts, error_lines, record

# No overlay traffic, no loss counted: make test runs this file before Molecule ends (agent-control).
pytestmark = pytest.mark.control_plane

SUBNETS = "/coreos.com/network/subnets/"
WINDOW = 20.0  # seconds over which the request rate is measured
# Without a backoff the agent sent about 190 requests a second (then died of RecursionError); with
# it, a cycle of about 5 requests comes at most every 1, 2, 4 ... 30 s.
MAX_RATE = 2.0


@pytest.fixture
def fake_etcd_agent(lab, agent_path, tmp_path, request):
    """An agent on a lab host whose only etcd is a FakeEtcd in the LAN namespace; the test runs in
    that namespace too (as with a Cluster), so that /healthz is asked there and nowhere else."""
    fake = FakeEtcd(lab.lan_ns, "%s.1" % lab.lan_prefix, TUTORIAL_CONFIG, **request.param)
    stand_in = types.SimpleNamespace(workdir=str(tmp_path), agents=[], python=sys.executable,
                                     agent_path=agent_path, api="v2", endpoint=fake.endpoint, wireguard=False)
    agent = AgentProcess(stand_in, lab.add_host(), ["-etcd-endpoints=" + fake.endpoint]).start()
    pyroute2_netns.pushns(lab.lan_ns)
    try:
        yield fake, agent
    finally:
        pyroute2_netns.popns()
        agent.stop(signal.SIGKILL)
        fake.close()


@pytest.mark.parametrize("fake_etcd_agent, case, reason", [
    ({"forget_leases": True}, "listings never hold the agent's lease, index falling",
     "vanished; re-acquiring a lease (same subnet if free) ("),
    ({"watch_back": True}, "every watch answer 10 below the index asked", "etcd's index went back from"),
], indirect=["fake_etcd_agent"], ids=["lease-never-listed-index-falling", "watch-index-backwards"])
def test_misbehaving_etcd_is_retried_with_backoff_not_recursion(fake_etcd_agent, case, reason):
    fake, agent = fake_etcd_agent
    wait_for(lambda: fake.requests, 15, what="the agent's first request (log:\n%s)" % agent.log)
    time.sleep(5)  # the first, quick retries
    started = time.monotonic()
    answers = []
    while time.monotonic() - started < WINDOW:
        answers.append(agent.healthz())
        time.sleep(0.5)
    rate = fake.rate(started, time.monotonic())
    record("fake etcd: %s" % case, "%.2f requests/s over %.0f s (5 s after the start), %d in all"
           % (rate, WINDOW, len(fake.requests)))
    assert rate <= MAX_RATE, "%.1f requests/s (log:\n%s)" % (rate, agent.log[-3000:])
    assert agent.process.poll() is None
    assert "RecursionError" not in agent.log and "Traceback" not in agent.log
    assert any(status == 503 and reason in body for status, body in answers), answers[-3:]
    assert "times in a row; next try in" in agent.log  # the backoff, said in the log


def _junk(cluster, subnet, kind):
    key = "%s%s-%d" % (SUBNETS, subnet.ip, subnet.prefixlen)
    if kind == "directory":
        cluster.raw.write(key, None, dir=True)
    else:
        cluster.raw.write(key, {"text": "not a lease", "list": "[1, 2]", "nan": '{"PublicIP": NaN}'}[kind])
    return key


def test_junk_at_every_free_key_says_no_free_subnet_then_leases_a_freed_key(lab, agent_path):
    config = ('{"Network": "10.0.0.0/16", "SubnetLen": 24, "SubnetMin": "10.0.1.0", "SubnetMax": "10.0.4.0", '
              '"Backend": {"Type": "vxlan"}}')
    with Cluster(lab, agent_path, config=config, name="junk-at-every-free-key") as cluster:
        first = cluster.agent(lab.add_host())
        held = IPNetwork(first.wait_env()).cidr
        free = [IPNetwork("10.0.%d.0/24" % number) for number in range(1, 5) if number != held.ip.words[2]]
        keys = [_junk(cluster, subnet, kind) for subnet, kind in zip(free, ("directory", "text", "nan"))]
        newcomer_host = lab.add_host()
        newcomer = cluster.agent(newcomer_host, "-metrics=true")
        message = ("no free subnet: every /24 between 10.0.1.0 and 10.0.4.0 has a key; 3 keys in range hold no "
                   "valid lease (delete them to free their subnets)")
        wait_for(lambda: message in newcomer.log, what="no free subnet (log:\n%s)" % newcomer.log)
        time.sleep(12)
        status, body = newcomer.healthz()
        attempts = acquisition_attempts(newcomer_host)
        record("junk at every free key", "%d attempts in the first ~12 s; 503 with the count" % attempts)
        assert status == 503 and message in body
        assert 2 <= attempts <= 6  # backoff 1, 2, 4, 8 ... 30 s
        assert error_lines(newcomer.log, message) == 1  # one line for the episode, not one a try
        assert "Max retries" not in newcomer.log and "Traceback" not in newcomer.log
        cluster.raw.delete(keys[1])  # an operator deletes one of them
        freed = free[1]
        wait_for(lambda: newcomer.env().get("FLANNEL_SUBNET") == "%s/24" % (freed.ip + 1), 40,
                 what="the freed subnet leased (log:\n%s)" % newcomer.log)
        newcomer.wait_ready()
        assert first.healthz()[0] == 200 and str(freed) in first.routes(vni=1)


def test_stray_signals_are_logged_and_ignored_and_sigquit_stops(lab, cluster):
    agent = cluster.agent(lab.add_host())
    agent.wait_ready()
    subnet = agent.env()["FLANNEL_SUBNET"]
    strays = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGPIPE, signal.SIGRTMIN + 3]
    for stray in strays:
        agent.process.send_signal(stray)
    names = ["SIGUSR1", "SIGUSR2", "SIGALRM", "SIGRTMIN+3"]  # SIGPIPE: ignored without a line (signals.py)
    wait_for(lambda: all("%s received: ignored" % name in agent.log for name in names), 10,
             what="a line for each stray signal (log:\n%s)" % agent.log)
    time.sleep(1)
    assert agent.process.poll() is None and agent.healthz()[0] == 200 and agent.env()["FLANNEL_SUBNET"] == subnet
    for name in names:
        assert agent.log.count("%s received: ignored" % name) == 1
    assert "SIGPIPE" not in agent.log
    agent.process.send_signal(signal.SIGQUIT)
    assert agent.process.wait(10) == 0
    assert "SIGQUIT received: stopping" in agent.log and "Traceback" not in agent.log
