"""Agents as real processes on Lab hosts, with etcd inside the Lab's LAN namespace.

The test process enters the LAN namespace (pyroute2 pushns) while a Cluster is open, so its
etcd client reaches etcd at <lan>.1 exactly as the agents do; nothing listens in the root namespace.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request

from netaddr import IPNetwork
from pyroute2 import netns as pyroute2_netns

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import LeaseAttrs
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.netlink import overlay_state
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import make_registry
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.subnet_env import read_subnet_env

from .etcdserver import RawV3Client
from .netns import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TUTORIAL_CONFIG = ('{"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", '
                   '"SubnetMax": "10.99.0.0", "Backend": {"Type": "vxlan", "VNI": 100, "Port": 8472}}')
HEALTHZ_PORT = 8471
# Upstream flanneld v0.10.0, the reference for mixed clusters and side-by-side benchmarks. It lives
# beside the project (never inside it); NETLAB_UPSTREAM_FLANNELD points elsewhere (e.g. from a worktree).
UPSTREAM_FLANNELD = os.environ.get("NETLAB_UPSTREAM_FLANNELD") or os.path.join(
    os.path.dirname(ROOT), "shared", "upstream", "flanneld-v0.10.0")
AGENT_KINDS = ("ours", "upstream")


def upstream_absent_reason():
    """Why upstream flanneld cannot be run here, or None when it can."""
    if os.access(UPSTREAM_FLANNELD, os.X_OK):
        return None
    return ("upstream flanneld v0.10.0 is absent: no executable at %s (set NETLAB_UPSTREAM_FLANNELD to "
            "its path)" % UPSTREAM_FLANNELD)


def numbered_vxlan_peer(number):
    """(subnet, LeaseAttrs) of the benchmarks' peer `number` (0 to 3999): a /20 in 10.20.0.0 up, a
    PublicIP in 172.31.100.1 up and a VtepMAC, each distinct per number."""
    subnet = IPNetwork("10.%d.%d.0/20" % (20 + number // 16, (number % 16) * 16))
    return subnet, LeaseAttrs("172.31.%d.%d" % (100 + number // 250, 1 + number % 250), "vxlan",
                              "0e:00:00:%02x:%02x:01" % (number // 256, number % 256))


def build_agent(directory):
    """The agent zipapp, as a copy of its own in `directory`: build/flanneld.pyz is (re)built by
    tools/build_agent.py when stale, as for `make agent` and the flanneld role, then copied, so
    that a rebuild during the run never replaces the file under running agents."""
    built = os.path.join(ROOT, "build", "flanneld.pyz")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_agent.py"), built],
                   check=True, stdout=subprocess.DEVNULL)
    path = os.path.join(directory, "flanneld.pyz")
    shutil.copyfile(built, path)
    return path


class AgentProcess:
    """One agent on one Lab host: ours (the zipapp) or upstream flanneld (`kind`).

    Both get the same flags (upstream's spelling; extra `flags` must suit the kind) and the host's
    one subnet file, which a later agent on the same host reads, as after a package swap on a real
    host. Each process has its own log.
    """

    def __init__(self, cluster, host, flags, kind="ours"):
        if kind not in AGENT_KINDS:
            raise ValueError("kind must be one of %s, not %r" % (", ".join(AGENT_KINDS), kind))
        self.cluster, self.host, self.flags, self.kind = cluster, host, flags, kind
        self.directory = os.path.join(cluster.workdir, host.name)
        os.makedirs(self.directory, exist_ok=True)
        self.subnet_file = os.path.join(self.directory, "subnet.env")
        self.key_file = os.path.join(self.directory, "wgkey")
        self.log_path = os.path.join(self.directory, "%s-%d.log" % (kind, len(cluster.agents)))
        self.process = None

    def start(self):
        program = [self.cluster.python, self.cluster.agent_path] if self.kind == "ours" else [UPSTREAM_FLANNELD]
        api = ["-etcd-api=v3"] if self.cluster.api == "v3" and self.kind == "ours" else []
        wrap = []
        if self.cluster.wireguard:
            # wireguard-go's control sockets are in /var/run/wireguard whatever the network
            # namespace: each host gets a directory of its own there (the same across restarts)
            # and its key file beside it.
            sockets = os.path.join(self.directory, "wireguard")
            os.makedirs(sockets, exist_ok=True)
            wrap = ["env", "WIREGUARD_KEY_FILE=" + self.key_file, "sh", "-c",
                    'mkdir -p /run/wireguard && mount --bind "$0" /run/wireguard && exec "$@"', sockets]
        argv = ["ip", "netns", "exec", self.host.ns] + wrap + program + api + [
            "-etcd-endpoints=" + self.cluster.endpoint, "-iface=eth0", "-subnet-file=" + self.subnet_file,
            "-healthz-ip=" + self.host.address, "-healthz-port=%d" % HEALTHZ_PORT] + list(self.flags)
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(argv, stdout=log, stderr=log)
        log.close()
        return self

    def freeze(self, timeout=10):
        """SIGSTOP, returning once every thread of the agent is stopped: kill() only queues the
        signal, and a thread still running after it returns can still read a reply and send the
        next request (a watch parked at a newer index than the test meant to leave it at)."""
        self.process.send_signal(signal.SIGSTOP)
        tasks = "/proc/%d/task" % self.process.pid

        def stopped():
            states = []
            for tid in os.listdir(tasks):
                try:
                    with open(os.path.join(tasks, tid, "stat")) as handle:
                        states.append(handle.read().rsplit(")", 1)[1].split()[0])
                except FileNotFoundError:  # a thread that ended meanwhile
                    continue
            return states and all(state in "Tt" for state in states)
        wait_for(stopped, timeout, interval=0.01, what="%s agent stopped by SIGSTOP" % self.host.name)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout)
        return self.process.returncode if self.process else None

    @property
    def log(self):
        with open(self.log_path) as handle:
            return handle.read()

    def env(self):
        return read_subnet_env(self.subnet_file)

    def wait_env(self, timeout=15):
        return wait_for(lambda: self.env().get("FLANNEL_SUBNET"), timeout,
                        what="%s subnet.env (log:\n%s)" % (self.host.name, self.log))

    def wait_ready(self, timeout=20):
        """Wait until the agent holds its lease and runs its backend. Ours says so on /healthz;
        upstream's /healthz answers 200 from start-up, so its log's renewal line tells instead."""
        if self.kind == "ours":
            return wait_for(lambda: self.healthz()[0] == 200, timeout, what="%s agent healthy (log:\n%s)"
                            % (self.host.name, self.log))
        return wait_for(lambda: "to renew lease" in self.log, timeout,
                        what="%s upstream flanneld running its backend (log:\n%s)" % (self.host.name, self.log))

    def healthz(self):
        """(status, body) of GET /healthz, or (None, error) when nothing answers."""
        try:
            with urllib.request.urlopen("http://%s:%d/healthz" % (self.host.address, HEALTHZ_PORT),
                                        timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.request.HTTPError as err:
            return err.code, err.read().decode()
        except OSError as err:
            return None, str(err)

    def state(self, vni=100):
        return overlay_state(vni, ipr=self.host.ipr())

    def routes(self, vni=100):
        return dict((route["dst"], route) for route in self.state(vni)["routes"])


class Cluster:
    """etcd in the LAN namespace plus agents on hosts; use as a context manager. With api="v3",
    etcd runs with the v2 API off and our agents get -etcd-api=v3."""

    def __init__(self, lab, agent_path, config=TUTORIAL_CONFIG, name="cluster", api="v2", python=sys.executable,
                 wireguard=False):
        self.lab, self.agent_path, self.config, self.name, self.api = lab, agent_path, config, name, api
        self.wireguard = wireguard  # each agent with a private /run/wireguard (wireguard-go's sockets)
        self.python = python  # the interpreter running our agent's zipapp
        self.workdir = tempfile.mkdtemp(prefix="netlab-cluster-")
        self.endpoint = "http://%s.1:2379" % lab.lan_prefix
        self.agents = []
        self.etcd = None
        self.registry = None
        self.raw = None  # python-etcd (v2) or RawV3Client: writes what the registry never would

    def __enter__(self):
        pyroute2_netns.pushns(self.lab.lan_ns)
        try:
            self.start_etcd()
            self.registry = make_registry(self.api, endpoints=self.endpoint)
            self.raw = self.registry._clients[0] if self.api == "v2" else RawV3Client(self.endpoint)
            if self.config is not None:
                self.registry.put_config(self.config)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start_etcd(self, port=2379):
        """etcd in the LAN namespace, clients on `port` and peers on port + 1 (2379: the cluster's
        own, `endpoint`; another port is an etcd cluster of its own, its data in etcd-<port>, which
        the caller stops). Returns its process."""
        # The endpoint's scheme: a TLS cluster's etcd takes https from its ETCD_* environment.
        client = "%s://%s.1:%d" % (self.endpoint.split("://", 1)[0], self.lab.lan_prefix, port)
        peer = "http://%s.1:%d" % (self.lab.lan_prefix, port + 1)
        name = "etcd" if client == self.endpoint else "etcd-%d" % port
        log = open(os.path.join(self.workdir, name + ".log"), "a")
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.lan_ns, shutil.which("etcd"), "--name", "lan", "--data-dir",
             os.path.join(self.workdir, name), "--enable-v2=%s" % str(self.api == "v2").lower(),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "lan=" + peer],
            stdout=log, stderr=log)
        log.close()
        if client == self.endpoint:
            self.etcd = process
        wait_for(lambda: self._etcd_answers(client), 20, what="etcd in the LAN namespace at %s" % client)
        return process

    def _etcd_answers(self, endpoint):
        try:  # a quorum read: answered only once etcd has a leader, i.e. really serves
            if self.api == "v3":
                RawV3Client(endpoint).revision()  # a range: linearizable by default
            else:
                urllib.request.urlopen(endpoint + "/v2/keys/?quorum=true", timeout=1).read()
            return True
        except OSError:
            return False

    def stop_etcd(self):
        if self.etcd and self.etcd.poll() is None:
            self.etcd.terminate()
            self.etcd.wait(10)

    def agent(self, host, *flags, kind="ours"):
        """Start an agent of `kind` (ours or upstream) on `host` with extra `flags`."""
        agent = AgentProcess(self, host, flags, kind).start()
        self.agents.append(agent)
        return agent

    def lease_value(self, subnet_cidr):
        """The lease's value exactly as its writer stored it in etcd."""
        subnet = __import__("netaddr").IPNetwork(subnet_cidr)
        return self.raw.read("/coreos.com/network/subnets/%s-%d" % (subnet.ip, subnet.prefixlen)).value

    def lease_json(self, subnet_cidr):
        return self.registry.get_lease(__import__("netaddr").IPNetwork(subnet_cidr)).attrs.to_json()

    def __exit__(self, *exc):
        for agent in self.agents:
            agent.stop(signal.SIGKILL)
        self.stop_etcd()
        if self.registry is not None:
            self.registry.close()
        pyroute2_netns.popns()
        # Keep the logs of the last run of each test for post-mortems (CI prints them on failure).
        logs = os.path.join(ROOT, "build", "test-logs", self.name)
        shutil.rmtree(logs, ignore_errors=True)
        os.makedirs(logs)
        for agent in self.agents:
            shutil.copy(agent.log_path, os.path.join(logs, agent.host.name + "-" + os.path.basename(agent.log_path)))
        shutil.rmtree(self.workdir, ignore_errors=True)
