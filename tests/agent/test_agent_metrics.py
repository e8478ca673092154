"""/metrics of the built agent on namespace hosts with a real etcd: the series follow the lease,
peers, repairs, bad leases and an etcd outage; the port flags fail cleanly; and a real Prometheus
(Debian's package) scrapes the agents and answers a query about them."""

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.cluster import HEALTHZ_PORT, wait_for

# No overlay traffic, no loss counted: make test runs this file before Molecule ends (agent-control).
pytestmark = pytest.mark.control_plane

PROMETHEUS = shutil.which("prometheus")


def scrape(host, port=HEALTHZ_PORT, path="/metrics"):
    """{(name, sorted labels): value} of one GET, or the HTTP status when it is not 200."""
    try:
        with urllib.request.urlopen("http://%s:%d%s" % (host.address, port, path), timeout=5) as response:
            text = response.read().decode()
    except urllib.request.HTTPError as err:
        return err.code
    return dict(((sample.name, tuple(sorted(sample.labels.items()))), sample.value)
                for family in text_string_to_metric_families(text) for sample in family.samples)


def total(samples, name):
    return sum(value for (sample_name, _labels), value in samples.items() if sample_name == name)


@pytest.mark.parametrize("etcd_api", ["v2", "v3"])
def test_series_follow_lease_peers_repairs_bad_leases_and_an_etcd_outage(lab, cluster):
    hosts = [lab.add_host(), lab.add_host()]
    agents = [cluster.agent(host, "-reconcile-interval=1") for host in hosts]
    for agent in agents:
        agent.wait_ready()
    own, peer = agents[0].env()["FLANNEL_SUBNET"], agents[1].env()["FLANNEL_SUBNET"]
    own_network = str(__import__("netaddr").IPNetwork(own).cidr)
    peer_network = str(__import__("netaddr").IPNetwork(peer).cidr)
    wait_for(lambda: scrape(hosts[0]).get(("flannel_peers", (("backend", "vxlan"),))) == 1, what="one vxlan peer")
    samples = scrape(hosts[0])
    [(lease_labels, _one)] = [(dict(labels), value) for (name, labels), value in samples.items()
                              if name == "flannel_lease_info"]
    assert lease_labels["subnet"] == own_network and lease_labels["public_ip"] == hosts[0].address
    assert lease_labels["vtep_mac"] == json.loads(cluster.lease_json(own_network))["BackendData"]["VtepMAC"]
    assert 23 * 3600 < samples[("flannel_lease_expiry_seconds", ())] <= 24 * 3600
    config = (("backend", "vxlan"), ("network", "10.0.0.0/8"), ("subnet_len", "20"), ("vni", "100"))
    assert samples[("flannel_config_info", config)] == 1
    assert samples[("flannel_healthy", ())] == 1
    assert samples[("flannel_event_programming_seconds_count", ())] >= 0
    assert samples[("process_resident_memory_bytes", ())] > 10 ** 6
    assert samples[("flannel_etcd_requests_total", (("operation", "watch_leases"),))] >= 1

    # A peer joining later is an event handled and programmed, with its latency observed.
    third = lab.add_host()
    cluster.agent(third, "-reconcile-interval=1").wait_ready()
    wait_for(lambda: scrape(hosts[0])[("flannel_peers", (("backend", "vxlan"),))] == 2, what="two vxlan peers")
    samples = scrape(hosts[0])
    assert samples[("flannel_watch_events_total", (("outcome", "handled"),))] >= 1
    assert samples[("flannel_event_programming_seconds_count", ())] >= 1

    # A route removed behind the agent's back is a route repair; subnet.env rewritten, another.
    hosts[0].run(["ip", "route", "del", peer_network])
    wait_for(lambda: scrape(hosts[0])[("flannel_reconcile_repairs_total", (("kind", "route"),))] >= 1,
             what="a route repair counted")
    os.unlink(agents[0].subnet_file)
    wait_for(lambda: scrape(hosts[0])[("flannel_reconcile_repairs_total", (("kind", "subnet_env"),))] >= 1,
             what="a subnet.env repair counted")

    # A malformed key is a skipped event and a bad lease, as /healthz counts it.
    cluster.raw.write("/coreos.com/network/subnets/not-a-subnet", "{}")
    wait_for(lambda: scrape(hosts[0])[("flannel_watch_events_total", (("outcome", "skipped"),))] >= 1,
             what="a skipped event counted")
    assert scrape(hosts[0])[("flannel_bad_leases", ())] == 1
    assert "bad leases skipped: 1" in agents[0].healthz()[1]
    # Deleted: the gauge counts the keys skipped now, the counter every skip so far.
    cluster.raw.delete("/coreos.com/network/subnets/not-a-subnet")
    wait_for(lambda: scrape(hosts[0])[("flannel_bad_leases", ())] == 0, what="the bad-lease gauge back to 0")
    assert scrape(hosts[0])[("flannel_bad_lease_skips_total", ())] == 1
    assert "bad leases skipped" not in agents[0].healthz()[1]

    # etcd down: the scrape still answers, with the errors counted and the agent unhealthy.
    cluster.stop_etcd()
    wait_for(lambda: total(scrape(hosts[0]), "flannel_etcd_request_errors_total") >= 2, timeout=20,
             what="etcd errors counted while etcd is down")
    samples = scrape(hosts[0])
    assert samples[("flannel_healthy", ())] == 0
    assert samples[("flannel_lease_info", tuple(sorted(lease_labels.items())))] == 1  # the lease is still held


def _run_agent(cluster, host, *flags):
    argv = ["ip", "netns", "exec", host.ns, sys.executable, cluster.agent_path, "-etcd-endpoints=" + cluster.endpoint,
            "-iface=eth0", "-subnet-file=" + os.path.join(cluster.workdir, host.name, "subnet.env"),
            "-healthz-ip=" + host.address] + list(flags)
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False,
                          timeout=30)


def test_metrics_port_clash_is_one_line_and_status_2(lab, cluster):
    host = lab.add_host()
    result = _run_agent(cluster, host, "-healthz-port=8471", "-metrics-port=8471")
    assert (result.returncode, result.stderr) == (2, "flanneld: invalid value 8471 for -metrics-port: it is the "
                                                     "-healthz-port; leave -metrics-port at 0 to serve /metrics on "
                                                     "the healthz port\n")
    # Another service already on the port (a listener inside the host's namespace).
    busy = subprocess.Popen(["ip", "netns", "exec", host.ns, sys.executable, "-c",
                             "import socket, time; s = socket.socket(); s.bind(('%s', 9471)); s.listen(); "
                             "print('ready', flush=True); time.sleep(60)" % host.address],
                            stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert busy.stdout.readline().strip() == "ready"
        result = _run_agent(cluster, host, "-healthz-port=8471", "-metrics-port=9471")
    finally:
        busy.kill()
        busy.wait()
    assert result.returncode == 2, result.stderr
    assert result.stderr == ("flanneld: invalid value for flag -healthz-ip/-metrics-port: cannot listen on "
                             "%s:9471: Address already in use\n" % host.address)
    assert cluster.registry.list_leases().leases == []  # refused before etcd was written


def test_metrics_on_a_port_of_its_own_or_off(lab, cluster):
    first, second = lab.add_host(), lab.add_host()
    cluster.agent(first, "-metrics-port=9471").wait_ready()
    assert scrape(first, 9471)[("flannel_healthy", ())] == 1
    assert scrape(first, 9471, "/healthz") == 404
    assert scrape(first, HEALTHZ_PORT) == 404  # /healthz's port keeps /healthz only
    cluster.agent(second, "-metrics=false").wait_ready()
    assert scrape(second) == 404


PROMETHEUS_CONFIG = """global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: flanneld
    static_configs:
      - targets: [%s]
"""


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (make prereqs installs Debian's)")
def test_prometheus_scrapes_the_agents_and_answers_a_query(lab, cluster):
    hosts = [lab.add_host(), lab.add_host()]
    for host in hosts:
        cluster.agent(host).wait_ready()
    directory = os.path.join(cluster.workdir, "prometheus")
    os.makedirs(directory)
    with open(os.path.join(directory, "prometheus.yml"), "w") as handle:
        handle.write(PROMETHEUS_CONFIG % ", ".join("'%s:%d'" % (host.address, HEALTHZ_PORT) for host in hosts))
    listen = "%s.1:9090" % lab.lan_prefix
    log = open(os.path.join(directory, "prometheus.log"), "w")
    server = subprocess.Popen(["ip", "netns", "exec", lab.lan_ns, PROMETHEUS,
                               "--config.file=" + os.path.join(directory, "prometheus.yml"),
                               "--storage.tsdb.path=" + os.path.join(directory, "data"),
                               "--web.listen-address=" + listen], stdout=log, stderr=log)
    log.close()

    def query(expression):
        url = "http://%s/api/v1/query?%s" % (listen, urllib.parse.urlencode({"query": expression}))
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answer = json.load(response)
        except OSError:
            return []
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    try:
        leases = wait_for(lambda: len(query("flannel_lease_info")) == 2 and query("flannel_lease_info"), timeout=60,
                          interval=0.5, what="Prometheus holding both agents' flannel_lease_info (its log: %s)"
                          % os.path.join(directory, "prometheus.log"))
        by_instance = dict((series["metric"]["instance"], series["metric"]["subnet"]) for series in leases)
        assert sorted(by_instance) == sorted("%s:%d" % (host.address, HEALTHZ_PORT) for host in hosts)
        for agent in cluster.agents:
            expected = str(__import__("netaddr").IPNetwork(agent.env()["FLANNEL_SUBNET"]).cidr)
            assert by_instance["%s:%d" % (agent.host.address, HEALTHZ_PORT)] == expected
        peers = query('sum by (instance) (flannel_peers{backend="vxlan"})')
        assert sorted(float(series["value"][1]) for series in peers) == [1.0, 1.0]
        assert [series["value"][1] for series in query("up")] == ["1", "1"]
    finally:
        server.terminate()
        server.wait(20)
