"""A network config changed in etcd while the agents run: each host moves to it without a
restart (backend, VNI, MTU, Network), refuses an invalid one and runs on. Pings lost per switch
go to build/reliability-figures.txt (RELIABILITY.md)."""

import json
import signal
import time

import pytest
from netaddr import IPNetwork

from support.cluster import wait_for
from support.netns import Pinger, ping
from test_reliability import record

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.netlink import deterministic_vtep_mac

BASE = {"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0"}
VXLAN_100 = dict(BASE, Backend={"Type": "vxlan", "VNI": 100, "Port": 8472})
HOST_GW = dict(BASE, Backend={"Type": "host-gw"})
VXLAN_200 = dict(BASE, Backend={"Type": "vxlan", "VNI": 200, "Port": 8472})
VXLAN_200_MTU = dict(BASE, Backend={"Type": "vxlan", "VNI": 200, "Port": 8472, "MTU": 1400})
PING_INTERVAL = 0.1


def _digest(config):
    return parse_network_config(json.dumps(config), strict=False).digest()


def _running(agent, digest):
    status, body = agent.healthz()
    return status == 200 and digest in body


def _in_force(agents, config):
    digest = "config in force %s" % _digest(config)
    for agent in agents:
        wait_for(lambda: _running(agent, digest), 15,
                 what="%s running %s (healthz %s; log:\n%s)" % (agent.host.name, digest, agent.healthz(), agent.log))


def _links(host):
    return set(line.split(":")[1].strip().split("@")[0]
               for line in host.run(["ip", "-o", "link", "show"]).stdout.splitlines())


def _switch(cluster, agents, containers, config, what):
    """Store `config` while container 0 pings container 1 every 0.1 s; returns the pings lost."""
    pinger = Pinger(containers[0].ns, containers[1].address, count=60, interval=PING_INTERVAL, timeout=0.5)
    time.sleep(1.5)
    cluster.registry.put_config(json.dumps(config))
    _in_force(agents, config)
    sent, replies = pinger.result()
    record("config change: %s" % what, "%d of %d pings lost at %.1f s (%.1f s worth)"
           % (sent - replies, sent, PING_INTERVAL, (sent - replies) * PING_INTERVAL))
    return sent - replies


def _start(lab, cluster, count=2):
    hosts = [lab.add_host() for _number in range(count)]
    agents = [cluster.agent(host, "-reconcile-interval=3600") for host in hosts]
    subnets = [IPNetwork(agent.wait_env()).cidr for agent in agents]
    _in_force(agents, VXLAN_100)
    for agent, own in zip(agents, subnets):  # every peer routed: the tests compare state from here
        wait_for(lambda: all(str(subnet) in agent.routes() for subnet in subnets if subnet != own),
                 what="%s routing its peers" % agent.host.name)
    return hosts, agents, subnets


def test_backend_vni_and_mtu_changes_reach_every_host_while_pinging(lab, cluster):
    hosts, agents, subnets = _start(lab, cluster)
    containers = [lab.add_container(host, "%s/20" % (subnet.network + 1)) for host, subnet in zip(hosts, subnets)]
    wait_for(lambda: str(subnets[1]) in agents[0].routes() and str(subnets[0]) in agents[1].routes(),
             what="vxlan routes")

    lost = _switch(cluster, agents, containers, HOST_GW, "vxlan -> host-gw")
    for host, agent, subnet, other, peer in zip(hosts, agents, subnets, subnets[::-1], hosts[::-1]):
        assert "flannel.100" not in _links(host)
        assert "%s via %s dev eth0" % (other, peer.address) in host.run(["ip", "route"]).stdout
        assert cluster.lease_json(str(subnet)) == '{"PublicIP":"%s","BackendType":"host-gw"}' % host.address
        assert agent.env()["FLANNEL_MTU"] == "1500" and IPNetwork(agent.env()["FLANNEL_SUBNET"]).cidr == subnet
    assert lost <= 10

    lost = _switch(cluster, agents, containers, VXLAN_100, "host-gw -> vxlan")
    for host, agent, subnet, other in zip(hosts, agents, subnets, subnets[::-1]):
        mac = deterministic_vtep_mac(host.address, 100)
        assert cluster.lease_json(str(subnet)) == (
            '{"PublicIP":"%s","BackendType":"vxlan","BackendData":{"VtepMAC":"%s"}}' % (host.address, mac))
        assert agent.routes()[str(other)]["onlink"] and agent.env()["FLANNEL_MTU"] == "1450"
        assert str(other) not in host.run(["ip", "route", "show", "dev", "eth0"]).stdout
    assert lost <= 10

    lost = _switch(cluster, agents, containers, VXLAN_200, "VNI 100 -> 200")
    for host, agent, subnet in zip(hosts, agents, subnets):
        assert "flannel.100" not in _links(host) and "flannel.200" in _links(host)
        assert json.loads(cluster.lease_json(str(subnet)))["BackendData"]["VtepMAC"] == \
            deterministic_vtep_mac(host.address, 200)
        assert agent.state(200)["device"]["vni"] == 200
    assert lost <= 10

    index_before = [agent.state(200)["device"]["index"] for agent in agents]
    lost = _switch(cluster, agents, containers, VXLAN_200_MTU, "MTU 1450 -> 1400 (device kept)")
    for agent in agents:
        assert agent.state(200)["device"]["mtu"] == 1400 and agent.env()["FLANNEL_MTU"] == "1400"
    assert [agent.state(200)["device"]["index"] for agent in agents] == index_before
    assert lost == 0
    for agent in agents:
        assert agent.process.poll() is None and "Traceback" not in agent.log


@pytest.mark.parametrize("etcd_api", ["v2", "v3"])
def test_network_change_releases_leases_that_no_longer_fit(lab, cluster):
    hosts, agents, subnets = _start(lab, cluster, count=3)
    moved = dict(BASE, Network="10.128.0.0/9", SubnetMin="10.130.0.0", SubnetMax="10.140.0.0",
                 Backend=VXLAN_100["Backend"])
    cluster.registry.put_config(json.dumps(moved))
    _in_force(agents, moved)
    new = [IPNetwork(agent.env()["FLANNEL_SUBNET"]).cidr for agent in agents]
    assert len(set(new)) == 3
    for agent, subnet in zip(agents, new):
        assert subnet in IPNetwork("10.128.0.0/9") and subnet.prefixlen == 20
        assert agent.env()["FLANNEL_NETWORK"] == "10.128.0.0/9"
        assert sorted(agent.routes()) == sorted(str(other) for other in new if other != subnet)
        assert agent.state()["device"]["addresses"] == ["%s/32" % subnet.ip]
    leases = cluster.registry.list_leases().leases
    assert sorted(lease.subnet for lease in leases) == sorted(new)
    assert sorted(lease.attrs.public_ip for lease in leases) == sorted(host.address for host in hosts)

    # SubnetMax lowered but every lease still fits: nobody moves.
    narrowed = dict(moved, SubnetMax=str(max(new).ip))
    cluster.registry.put_config(json.dumps(narrowed))
    _in_force(agents, narrowed)
    assert [IPNetwork(agent.env()["FLANNEL_SUBNET"]).cidr for agent in agents] == new


@pytest.mark.parametrize("etcd_api", ["v2", "v3"])
def test_invalid_config_is_refused_and_nothing_changes(lab, cluster):
    hosts, agents, subnets = _start(lab, cluster)
    before = [(agent.routes(), agent.env(), cluster.lease_json(str(subnet))) for agent, subnet in zip(agents, subnets)]
    cluster.registry.put_config('{"Network": "10.1.2.3/8", "Backend": {"Type": "host-gw"}}')
    rule = "Network: 10.1.2.3/8 has host bits set: must be a network address, such as 10.0.0.0/8"
    for agent in agents:
        wait_for(lambda: rule in agent.healthz()[1], what="%s healthz naming the rule" % agent.host.name)
        status, body = agent.healthz()
        assert status == 200 and "running on the last good config %s" % _digest(VXLAN_100) in body
        assert "network config at /coreos.com/network/config refused: " + rule in agent.log
    cluster.registry.put_config('{"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "VNI": 0}}')
    for agent in agents:
        wait_for(lambda: "Backend.VNI: must be between 1 and 16777215, got 0" in agent.healthz()[1],
                 what="%s healthz naming the new refusal" % agent.host.name)
        assert "Network: 10.1.2.3/8" not in agent.healthz()[1]
    time.sleep(0.5)
    after = [(agent.routes(), agent.env(), cluster.lease_json(str(subnet))) for agent, subnet in zip(agents, subnets)]
    assert after == before
    for host in hosts:
        assert "flannel.100" in _links(host)
    # Fixed: the valid config (the same as in force) clears the refusal.
    cluster.registry.put_config(json.dumps(VXLAN_100))
    for agent in agents:
        wait_for(lambda: "refused" not in agent.healthz()[1], what="refusal cleared")
        assert agent.process.poll() is None and "Traceback" not in agent.log


def test_udp_switch_both_ways_while_pinging(lab, cluster):
    hosts, agents, subnets = _start(lab, cluster)
    containers = [lab.add_container(host, "%s/20" % (subnet.network + 1)) for host, subnet in zip(hosts, subnets)]
    wait_for(lambda: str(subnets[1]) in agents[0].routes(), what="vxlan route")
    udp = dict(BASE, Backend={"Type": "udp"})
    lost = _switch(cluster, agents, containers, udp, "vxlan -> udp")
    for host, agent, subnet in zip(hosts, agents, subnets):
        assert "flannel.100" not in _links(host) and "flannel0" in _links(host)
        assert cluster.lease_value(str(subnet)) == '{"PublicIP":"%s"}' % host.address
        assert agent.env()["FLANNEL_MTU"] == "1472"
    assert lost <= 10
    lost = _switch(cluster, agents, containers, VXLAN_100, "udp -> vxlan")
    for host, agent in zip(hosts, agents):
        assert "flannel0" not in _links(host) and "flannel.100" in _links(host)
        assert agent.env()["FLANNEL_MTU"] == "1450"
        assert "10.0.0.0/8 dev flannel0" not in host.run(["ip", "route"]).stdout
    assert lost <= 10


def test_backend_that_cannot_run_here_keeps_the_old_config(lab, cluster):
    # host-gw needs the PublicIP on the interface: a host behind NAT cannot move to it.
    host = lab.add_host()
    agent = cluster.agent(host, "-public-ip=172.31.250.99")
    subnet = IPNetwork(agent.wait_env()).cidr
    _in_force([agent], VXLAN_100)
    lease_before = cluster.lease_json(str(subnet))
    cluster.registry.put_config(json.dumps(HOST_GW))
    wait_for(lambda: "cannot run here" in agent.healthz()[1], what="healthz naming the failure")
    status, body = agent.healthz()
    assert status == 200 and "config in force %s" % _digest(VXLAN_100) in body
    assert "backend host-gw: your PublicIP 172.31.250.99 differs from interface IP" in body
    assert "flannel.100" in _links(host) and agent.state()["device"]["addresses"] == ["%s/32" % subnet.ip]
    assert cluster.lease_json(str(subnet)) == lease_before and agent.env()["FLANNEL_MTU"] == "1450"
    agent.process.send_signal(signal.SIGHUP)  # tries the stored config again
    wait_for(lambda: agent.log.count("cannot start backend host-gw") == 2, what="second attempt after SIGHUP")
    cluster.registry.put_config(json.dumps(VXLAN_100))
    wait_for(lambda: "cannot run here" not in agent.healthz()[1], what="refusal cleared by the old config")
    assert agent.process.poll() is None and "Traceback" not in agent.log


def test_rolling_change_beside_upstream_needs_upstream_restarted(lab, cluster, upstream):
    """Upstream flanneld v0.10 reads the config at start only (README, mixed clusters): after a
    vxlan -> host-gw change our host routes to the upstream host directly, but upstream ignores
    the host-gw lease and keeps sending VXLAN, so replies are lost until it is restarted."""
    hosts = [lab.add_host(), lab.add_host()]
    ours, theirs = cluster.agent(hosts[0]), cluster.agent(hosts[1], kind="upstream")
    subnets = [IPNetwork(agent.wait_env()).cidr for agent in (ours, theirs)]
    theirs.wait_ready()
    containers = [lab.add_container(host, "%s/20" % (subnet.network + 1)) for host, subnet in zip(hosts, subnets)]
    wait_for(lambda: ping(containers[0].ns, containers[1].address, count=1, timeout=1), what="vxlan ping")
    cluster.registry.put_config(json.dumps(HOST_GW))
    _in_force([ours], HOST_GW)
    assert "%s via %s dev eth0" % (subnets[1], hosts[1].address) in hosts[0].run(["ip", "route"]).stdout
    ignored = "ignoring non-vxlan subnet(%s): type=host-gw" % subnets[0]
    wait_for(lambda: ignored in theirs.log, what="upstream ignoring the host-gw lease (log:\n%s)" % theirs.log)
    assert not ping(containers[0].ns, containers[1].address, count=3, timeout=1)
    theirs.stop()
    restarted = cluster.agent(hosts[1], kind="upstream")
    restarted.wait_ready()
    assert IPNetwork(restarted.env()["FLANNEL_SUBNET"]).cidr == subnets[1]
    wait_for(lambda: ping(containers[0].ns, containers[1].address, count=1, timeout=1),
             what="host-gw ping once upstream restarted (log:\n%s)" % restarted.log)
