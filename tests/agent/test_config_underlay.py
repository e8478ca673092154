"""A network config whose Network covers the hosts' own addresses (the underlay), written straight
into etcd (issue 19): the built agents refuse it, naming the key and the rule, whether it arrives
while they run (they stay on the last good config: same subnets, routes, addresses and leases,
pings go on; the pings answered go to build/reliability-figures.txt) or is the one they start against (they wait and lease nothing until it is fixed).
Covered addresses: this host's public IP, its interface's addresses, the live leases' PublicIPs."""

import json

import pytest
from netaddr import IPNetwork

from support.cluster import TUTORIAL_CONFIG, Cluster, wait_for
from support.netns import Pinger
from test_config_change import VXLAN_100, _digest, _in_force
from test_reliability import record

VXLAN = VXLAN_100["Backend"]
RULE = "Network: %s contains the address %s of %s: the overlay must not cover the hosts' own network"
PING_INTERVAL = 0.1


def _covering(network):
    return {"Network": network, "Backend": VXLAN}


def _snapshot(cluster, host, agent, subnet):
    """What a refused config must leave alone on one host: its routes (the LAN's included), its
    addresses, subnet.env and its lease as stored."""
    return (host.run(["ip", "-o", "route", "show"]).stdout, host.run(["ip", "-o", "-4", "addr", "show"]).stdout,
            agent.env(), cluster.lease_value(str(subnet)))


def _refused_while_running(agent, rule):
    wait_for(lambda: rule in agent.healthz()[1], 15,
             what="%s healthz naming %r (healthz %s; log:\n%s)" % (agent.host.name, rule, agent.healthz(), agent.log))
    status, body = agent.healthz()
    assert status == 200, body
    assert "config in force %s" % _digest(VXLAN_100) in body
    assert "running on the last good config %s" % _digest(VXLAN_100) in body
    assert "network config at /coreos.com/network/config refused: " + rule in agent.log


def _refused_at_start(agent, rule):
    wait_for(lambda: rule in agent.healthz()[1], 15,
             what="%s healthz naming %r (healthz %s; log:\n%s)" % (agent.host.name, rule, agent.healthz(), agent.log))
    assert agent.healthz()[0] == 503
    assert "network config at /coreos.com/network/config rejected: %s; retrying every second" % rule in agent.log
    assert agent.env() == {} and "flannel.100" not in agent.host.run(["ip", "-o", "link", "show"]).stdout


@pytest.mark.parametrize("etcd_api", ["v2", "v3"])
def test_config_covering_the_hosts_is_refused_while_running_and_nobody_renumbers(lab, cluster):
    hosts = [lab.add_host() for _number in range(6)]
    hosts = hosts[:2] + hosts[5:]  # 172.31.250.11, .12 and .16: 172.31.250.16/28 covers the last alone
    agents = [cluster.agent(host, "-reconcile-interval=3600") for host in hosts]
    subnets = [IPNetwork(agent.wait_env()).cidr for agent in agents]
    _in_force(agents, VXLAN_100)
    containers = [lab.add_container(host, "%s/20" % (subnet.network + 1)) for host, subnet in zip(hosts, subnets)]
    for agent, subnet in zip(agents, subnets):
        wait_for(lambda: sorted(agent.routes()) == sorted(str(other) for other in subnets if other != subnet),
                 what="%s routes to both peers" % agent.host.name)
    before = [_snapshot(cluster, host, agent, subnet) for host, agent, subnet in zip(hosts, agents, subnets)]
    pingers = [Pinger(containers[0].ns, container.address, count=100, interval=PING_INTERVAL)
               for container in containers[1:]]

    # The config: the whole 172.31.0.0/16, every host's LAN address in it.
    cluster.registry.put_config(json.dumps(_covering("172.31.0.0/16")))
    for host, agent in zip(hosts, agents):
        _refused_while_running(agent, RULE % ("172.31.0.0/16", host.address, "this host (its public IP)"))
    # One host's address only: the other two know it as the PublicIP of that host's live lease.
    cluster.registry.put_config(json.dumps(_covering("172.31.250.16/28")))
    _refused_while_running(agents[2], RULE % ("172.31.250.16/28", hosts[2].address, "this host (its public IP)"))
    for agent in agents[:2]:
        _refused_while_running(agent, RULE % ("172.31.250.16/28", hosts[2].address,
                                              "the host holding lease %s" % subnets[2]))
    after_refusals = [_snapshot(cluster, host, agent, subnet) for host, agent, subnet in zip(hosts, agents, subnets)]

    # The good config back (other text, same effective config): nothing moves.
    cluster.registry.put_config(json.dumps(VXLAN_100))
    for agent in agents:
        wait_for(lambda: "refused" not in agent.healthz()[1], what="%s refusal cleared" % agent.host.name)
    results = [pinger.result() for pinger in pingers]
    record("configs covering the hosts refused while running", ", ".join(
        "%d of %d pings answered (every %.1f s)" % (replies, sent, PING_INTERVAL) for sent, replies in results))
    assert [replies for _sent, replies in results] == [sent for sent, _replies in results]
    assert after_refusals == before
    assert [_snapshot(cluster, host, agent, subnet) for host, agent, subnet in zip(hosts, agents, subnets)] == before
    for agent in agents:
        assert all(IPNetwork(dst) in IPNetwork("10.0.0.0/8") for dst in agent.routes())
        assert agent.healthz()[0] == 200 and agent.process.poll() is None
        assert "re-acquiring" not in agent.log and "Traceback" not in agent.log
    assert sorted(lease.subnet for lease in cluster.registry.list_leases().leases) == sorted(subnets)


@pytest.mark.parametrize("etcd_api", ["v2", "v3"])
def test_agent_starting_against_a_config_covering_the_hosts_waits_and_leases_nothing(lab, agent_path, etcd_api):
    hosts = [lab.add_host() for _number in range(6)]
    first, late = hosts[0], hosts[5]  # 172.31.250.11 and .16
    first.run(["ip", "addr", "add", "172.31.251.11/24", "dev", "eth0"])  # a second address on its interface
    with Cluster(lab, agent_path, config=json.dumps(_covering("172.31.0.0/16")), name="underlay-start-" + etcd_api,
                 api=etcd_api) as cluster:
        agent = cluster.agent(first)
        _refused_at_start(agent, RULE % ("172.31.0.0/16", first.address, "this host (its public IP)"))
        cluster.registry.put_config(json.dumps(_covering("172.31.251.0/24")))
        _refused_at_start(agent, RULE % ("172.31.251.0/24", "172.31.251.11", "this host (interface eth0)"))
        assert cluster.registry.list_leases().leases == []
        cluster.registry.put_config(TUTORIAL_CONFIG)
        subnet = IPNetwork(agent.wait_env()).cidr
        assert subnet in IPNetwork("10.0.0.0/8")
        wait_for(lambda: agent.healthz()[0] == 200, what="first agent healthy")

        # Covering only the running host's address: a host starting now sees it as a live lease's PublicIP.
        cluster.registry.put_config(json.dumps(_covering("172.31.250.0/28")))
        wait_for(lambda: "refused: " + RULE % ("172.31.250.0/28", first.address, "this host (its public IP)")
                 in agent.healthz()[1], what="running agent refusing")
        second = cluster.agent(late)
        _refused_at_start(second, RULE % ("172.31.250.0/28", first.address, "the host holding lease %s" % subnet))
        assert [lease.subnet for lease in cluster.registry.list_leases().leases] == [subnet]
        cluster.registry.put_config(TUTORIAL_CONFIG)
        assert IPNetwork(second.wait_env()).cidr in IPNetwork("10.0.0.0/8")
        wait_for(lambda: second.healthz()[0] == 200 and "refused" not in agent.healthz()[1], what="both healthy")
        assert IPNetwork(agent.env()["FLANNEL_SUBNET"]).cidr == subnet
        for running in (agent, second):
            assert running.process.poll() is None and "Traceback" not in running.log
