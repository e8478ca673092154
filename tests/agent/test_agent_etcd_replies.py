"""The built agent against an etcd that misbehaves (tests/support/misbehaving_etcd.py in the Lab's LAN
namespace, where etcd would be): its memory stays bounded, /healthz says 503 naming the problem,
the problem is logged once (not once per retry), retries back off, no traceback; SIGTERM ends the
agent within 2 s whatever etcd does, also with a real etcd frozen (SIGSTOP) mid-request."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from pyroute2 import netns as pyroute2_netns

from support.cluster import HEALTHZ_PORT, wait_for
from support.misbehaving_etcd import MisbehavingEtcd

# No overlay traffic, no loss counted: make test runs this file before Molecule ends (agent-control).
pytestmark = pytest.mark.control_plane

STOP_WITHIN = 2.0  # seconds: the bound for SIGTERM, whatever etcd is doing


def _memory(pid):
    """(VmRSS, VmHWM) of a process, in MiB."""
    with open("/proc/%d/status" % pid) as handle:
        fields = dict(line.split(":", 1) for line in handle if ":" in line)
    return tuple(int(fields[name].split()[0]) / 1024.0 for name in ("VmRSS", "VmHWM"))


class Agent:
    """Our agent on a Lab host, pointed at `endpoint`."""

    def __init__(self, lab, agent_path, api, endpoint, workdir):
        self.host = lab.add_host()
        self.log_path = os.path.join(workdir, "%s.log" % self.host.name)
        argv = ["ip", "netns", "exec", self.host.ns, sys.executable, agent_path, "-etcd-endpoints=" + endpoint,
                "-iface=eth0", "-subnet-file=" + os.path.join(workdir, "subnet.env"),
                "-healthz-ip=" + self.host.address, "-healthz-port=%d" % HEALTHZ_PORT]
        if api == "v3":
            argv.append("-etcd-api=v3")
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log)

    @property
    def log(self):
        with open(self.log_path) as handle:
            return handle.read()

    def healthz(self):
        try:
            with urllib.request.urlopen("http://%s:%d/healthz" % (self.host.address, HEALTHZ_PORT), timeout=2) as answer:
                return answer.status, answer.read().decode()
        except urllib.request.HTTPError as err:
            return err.code, err.read().decode()
        except OSError as err:
            return None, str(err)

    def seconds_to_stop(self):
        """SIGTERM, then the time until the process is gone (its exit status checked)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(30)
        took = time.monotonic() - started
        assert status == 0, self.log
        return took

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def in_lan(lab, tmp_path):
    """The test inside the Lab's LAN namespace (where etcd listens and /healthz is reached)."""
    pyroute2_netns.pushns(lab.lan_ns)
    agents = []
    try:
        yield agents
    finally:
        for agent in agents:
            agent.kill()
        pyroute2_netns.popns()


@pytest.mark.parametrize("api", ["v2", "v3"])
@pytest.mark.parametrize("mode, problem", [
    ("endless", "over 32 MiB (the limit for one reply)"),
    ("stall", "stalled mid-body"),
    ("not_json", "not JSON"),
])
def test_misbehaving_etcd_is_a_503_logged_once_with_bounded_memory(lab, agent_path, in_lan, tmp_path, api,
                                                                   mode, problem):
    fake = MisbehavingEtcd(address=lab.lan_prefix + ".1", port=2379, mode=mode, api=api)
    try:
        agent = Agent(lab, agent_path, api, fake.endpoint, str(tmp_path))
        in_lan.append(agent)
        reason = "etcd reply from %s: %s" % (fake.endpoint, problem)
        wait_for(lambda: agent.healthz()[0] == 503 and reason in agent.healthz()[1], 20,
                 what="503 naming %r (log:\n%s)" % (reason, agent.log))
        first_request = fake.requests
        highest = 0.0
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:  # retries at 1, 2, 4 s ...: each reads up to the limit again
            highest = max(highest, _memory(agent.process.pid)[0])
            time.sleep(0.1)
        rss, hwm = _memory(agent.process.pid)
        print("%s %s: VmRSS %.0f MiB now, %.0f MiB at most sampled, VmHWM %.0f MiB; %d requests in 12 s"
              % (api, mode, rss, highest, hwm, fake.requests - first_request))
        assert hwm < 100, "memory grew to %.0f MiB (log:\n%s)" % (hwm, agent.log)  # 31 MiB at start
        assert agent.process.poll() is None
        assert agent.healthz()[0] == 503 and reason in agent.healthz()[1]
        log = agent.log
        assert log.count(problem) == 2, log  # the error and the health change, not one per retry
        assert "with backoff (1, 2, 4 ... 30 s)" in log
        assert 1 <= fake.requests - first_request <= 5  # backed off, not every second
        assert "Traceback" not in log
        took = agent.seconds_to_stop()
        assert took < STOP_WITHIN, "SIGTERM took %.2f s" % took
    finally:
        fake.close()


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_sigterm_while_waiting_on_a_silent_etcd_ends_the_agent_at_once(lab, agent_path, in_lan, tmp_path, api):
    fake = MisbehavingEtcd(address=lab.lan_prefix + ".1", port=2379, mode="silent", api=api)
    try:
        agent = Agent(lab, agent_path, api, fake.endpoint, str(tmp_path))
        in_lan.append(agent)
        wait_for(lambda: fake.requests >= 1, 20, what="the agent asking etcd (log:\n%s)" % agent.log)
        time.sleep(0.5)
        took = agent.seconds_to_stop()
        print("%s: SIGTERM while get_config waited on a silent etcd: gone after %.3f s" % (api, took))
        assert took < STOP_WITHIN, "SIGTERM took %.2f s (log:\n%s)" % (took, agent.log)
        assert "Traceback" not in agent.log
    finally:
        fake.close()


@pytest.mark.parametrize("etcd_api", ["v2", "v3"])
def test_sigterm_while_a_resync_waits_on_a_frozen_etcd_ends_the_agent_at_once(lab, cluster):
    agent = cluster.agent(lab.add_host(), "-reconcile-interval=3600")
    agent.wait_ready()
    cluster.etcd.send_signal(signal.SIGSTOP)  # connections still open, nothing answered
    try:
        # The next step re-reads the config: it times out (503), and after a second's pause the
        # agent waits in that request again, up to its 5 s timeout, not in a watch.
        agent.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "health: unhealthy" in agent.log, 20, what="the re-read timing out (log:\n%s)" % agent.log)
        time.sleep(2.0)
        started = time.monotonic()
        agent.process.send_signal(signal.SIGTERM)
        status = agent.process.wait(30)
        took = time.monotonic() - started
    finally:
        cluster.etcd.send_signal(signal.SIGCONT)
    print("%s: SIGTERM while a re-list waited on a frozen etcd: gone after %.3f s" % (cluster.api, took))
    assert status == 0 and took < STOP_WITHIN, "SIGTERM took %.2f s (log:\n%s)" % (took, agent.log)
    assert "exiting; the data plane is left in place" in agent.log and "Traceback" not in agent.log
