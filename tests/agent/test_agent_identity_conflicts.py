"""Leases that copy a live host's identity (its VtepMAC for vxlan, its PublicIP for host-gw and
udp), written into a running overlay (built agents on namespace hosts, real etcd): the live host
keeps its entries on every host while a container pings it, each agent logs the conflict once
with both keys and counts it, and deleting the copy removes nothing of the live host's."""

import json
import time

import pytest
from netaddr import IPNetwork

from support.cluster import wait_for
from support.netns import Pinger
from test_agent_metrics import scrape
from test_reliability import record

PREFIX = "/coreos.com/network/subnets/"
COPY_KEY = "10.77.0.0-20"  # inside the tutorial Network's SubnetMin..SubnetMax, free
COPY_PUBLIC_IP = "172.31.250.99"  # on the lab's LAN, held by no host
RECONCILE = 2  # seconds (-reconcile-interval): the copy sits through several reconciles


def _subnet(agent):
    return str(IPNetwork(agent.wait_env()).cidr)


def _key(subnet):
    return "%s-%d" % (IPNetwork(subnet).ip, IPNetwork(subnet).prefixlen)


def _conflict_lines(agent):
    return [line for line in agent.log.splitlines() if "skipping lease %s:" % COPY_KEY in line]


def _counted(agent, kind):
    return scrape(agent.host)[("flannel_conflicting_leases_skipped_total", (("identity", kind),))]


def _victim_entries(agent, mac, subnet):
    """The kernel entries the victim's lease gives this host: its FDB entry, neighbour and route."""
    state = agent.state()
    return ([entry for entry in state["fdb"] if entry["mac"] == mac],
            [entry for entry in state["neighbours"] if entry["mac"] == mac],
            [route for route in state["routes"] if route["dst"] == subnet])


@pytest.mark.parametrize("etcd_api", ["v2", "v3"])
def test_copy_of_a_live_hosts_vtep_mac_changes_nothing_while_pinging(lab, cluster, etcd_api):
    hosts = [lab.add_host() for _number in range(3)]
    agents = [cluster.agent(host, "-reconcile-interval=%d" % RECONCILE) for host in hosts]
    subnets = [_subnet(agent) for agent in agents]
    for agent in agents:
        agent.wait_ready()
        wait_for(lambda: len(agent.routes()) == 2, what="routes to both peers on %s" % agent.host.name)
    victim, victim_subnet = agents[1], subnets[1]
    victim_key = _key(victim_subnet)
    victim_mac = json.loads(cluster.lease_json(victim_subnet))["BackendData"]["VtepMAC"]
    containers = [lab.add_container(host, "%s/20" % (IPNetwork(subnet).network + 1))
                  for host, subnet in zip(hosts[:2], subnets[:2])]
    others = [agents[0], agents[2]]
    before = dict((agent.host.name, _victim_entries(agent, victim_mac, victim_subnet)) for agent in others)
    assert all(all(entries) for entries in before.values()), before
    copy = json.dumps({"PublicIP": COPY_PUBLIC_IP, "BackendType": "vxlan", "BackendData": {"VtepMAC": victim_mac}},
                      separators=(",", ":"))
    pinger = Pinger(containers[0].ns, containers[1].address, count=200, interval=0.05, answered_first=True)
    time.sleep(1)
    cluster.raw.write(PREFIX + COPY_KEY, copy, ttl=600)
    # Three reconcile intervals with the copy in etcd, the victim's entries watched on every host.
    deadline = time.monotonic() + 3 * RECONCILE + 1
    while time.monotonic() < deadline:
        for agent in others:
            assert _victim_entries(agent, victim_mac, victim_subnet) == before[agent.host.name], agent.host.name
        time.sleep(0.1)
    cluster.raw.delete(PREFIX + COPY_KEY)
    time.sleep(RECONCILE + 1)
    sent, replies = pinger.result()
    record("a lease copying a live host's VtepMAC (%s), then deleted, while pinging it" % etcd_api,
           "%d/%d pings answered; its FDB, neighbour and route unchanged on both other hosts" % (replies, sent))
    assert replies == sent, "%d/%d pings answered; echoes %s had none" % (replies, sent, pinger.lost)
    for agent in others:
        assert _victim_entries(agent, victim_mac, victim_subnet) == before[agent.host.name], agent.host.name
        assert "10.77.0.0/20" not in agent.routes()
        lines = _conflict_lines(agent)
        assert len(lines) == 1 and victim_key in lines[0] and "VtepMAC %s" % victim_mac in lines[0], lines
        assert _counted(agent, "VtepMAC") == 1 and _counted(agent, "PublicIP") == 0
    # On the victim the copy carries this host's own VtepMAC: never programmed either.
    state = victim.state()
    assert victim_mac not in [entry["mac"] for entry in state["fdb"] + state["neighbours"]]
    assert "10.77.0.0/20" not in victim.routes()
    lines = _conflict_lines(victim)
    assert len(lines) == 1 and "this host's own (lease %s)" % victim_key in lines[0], lines
    assert _counted(victim, "VtepMAC") == 1
    for agent in agents:
        status, body = agent.healthz()
        assert status == 200 and "conflicting" not in body, body  # the copy is gone
        assert "Traceback" not in agent.log


HOST_GW = '{"Network": "10.6.0.0/16", "Backend": {"Type": "host-gw"}}'
UDP = ('{"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0", '
       '"Backend": {"Type": "udp"}}')


@pytest.mark.parametrize("config,copy_key,backend_type", [(HOST_GW, "10.6.77.0-24", "host-gw"),
                                                          (UDP, COPY_KEY, None)])
def test_lease_with_a_live_hosts_public_ip_is_skipped(lab, cluster, config, copy_key, backend_type):
    cluster.registry.put_config(config)
    hosts = [lab.add_host(), lab.add_host()]
    agents = [cluster.agent(host, "-reconcile-interval=%d" % RECONCILE) for host in hosts]
    subnets = [_subnet(agent) for agent in agents]
    for agent, peer in zip(agents, reversed(subnets)):
        agent.wait_ready()
        wait_for(lambda: "peer added: %s" % peer in agent.log, what="%s programming its peer" % agent.host.name)
    containers = [lab.add_container(host, "%s/%d" % (IPNetwork(subnet).network + 1, IPNetwork(subnet).prefixlen))
                  for host, subnet in zip(hosts, subnets)]
    pinger = Pinger(containers[0].ns, containers[1].address, count=100, interval=0.05, answered_first=True)
    copy = {"PublicIP": hosts[1].address}
    if backend_type:
        copy["BackendType"] = backend_type
    cluster.raw.write(PREFIX + copy_key, json.dumps(copy), ttl=600)
    copy_subnet = copy_key.replace("-", "/")
    wait_for(lambda: "skipping lease %s:" % copy_key in agents[0].log, what="the copy skipped")
    time.sleep(RECONCILE + 1)
    sent, replies = pinger.result()
    assert replies == sent, "%d/%d pings answered; echoes %s had none" % (replies, sent, pinger.lost)
    line = [line for line in agents[0].log.splitlines() if "skipping lease %s:" % copy_key in line]
    assert len(line) == 1 and "PublicIP %s is held by lease %s" % (hosts[1].address, _key(subnets[1])) in line[0]
    assert _counted(agents[0], "PublicIP") == 1
    # Nothing was programmed for the copy: no route (host-gw), no forwarding entry (udp).
    assert not [line for line in agents[0].log.splitlines()
                if copy_subnet in line and ("programmed" in line or "peer added" in line)]
    assert copy_subnet not in hosts[0].run(["ip", "route", "show"]).stdout
    status, body = agents[0].healthz()
    assert status == 200 and body.rstrip().endswith("conflicting leases skipped: 1"), body
    # The victim sees its own PublicIP in the copy: never programmed there either.
    assert "PublicIP %s is this host's own (lease %s)" % (hosts[1].address, _key(subnets[1])) in agents[1].log
