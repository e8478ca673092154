"""Hostile leases written into a running overlay (built agents on namespace hosts, real etcd):
the pings across go on, every agent stays healthy and logs each bad lease once, no route leaves
the Network, and a new host still gets a subnet."""

import json
import time

from netaddr import IPNetwork

from support.cluster import wait_for
from support.netns import Pinger
from test_reliability import record

PREFIX = "/coreos.com/network/subnets/"
GOOD = '{"PublicIP":"172.31.250.99","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:00:00:00:00:99"}}'
# key -> value: each one broke a rule a lease must keep (see RELIABILITY.md's bad-input table).
HOSTILE = {
    "10.20.0.0-20": '{"PublicIP":"172.31.250.98","BackendType":"vxlan","BackendData":{"VtepMAC":"zz:zz"}}',
    "10.21.0.0-20": '{"PublicIP":"172.31.250.98","BackendType":"vxlan","BackendData":{"VtepMAC":"ff:ff:ff:ff:ff:ff"}}',
    "192.168.0.0-24": GOOD,  # outside the Network
    "172.31.250.0-24": GOOD,  # the hosts' own LAN, the underlay
    "0.0.0.0-0": GOOD,  # everything: would also exhaust the space
    "10.0.0.0-8": GOOD,  # the whole Network
    "10.22.0.0-20": '{"PublicIP":"10.1.2.3","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:00:00:00:00:22"}}',
    "10.23.0.0-20": '{"PublicIP":"172.31.250.98","BackendType":"nope"}',
    "10.24.0.0-20": "[" * 10000 + "]" * 10000,
    "10.25.0.0-20": '{"PublicIP":"fe80::1","BackendType":"vxlan","BackendData":{"VtepMAC":"0e:00:00:00:00:25"}}',
    "10.26.7.0-20": GOOD,  # host bits: another spelling of 10.26.0.0-20
    "10.27.0.0-20": "not json",
    "10.28.0.0-20": '{"PublicIP":"172.31.250.255","BackendType":"host-gw"}',  # the hosts' LAN broadcast address
    "10.29.0.0-20": '{"PublicIP":"172.31.250.98","BackendType":"udp","Weight":NaN}',  # not JSON
}


def _routes(host):
    return set(route["dst"] for route in json.loads(host.run(["ip", "-j", "route", "show"]).stdout))


def _subnet(agent):
    return str(IPNetwork(agent.wait_env()).cidr)


def test_hostile_leases_while_pinging_change_nothing_and_a_new_host_joins(lab, cluster):
    hosts = [lab.add_host(), lab.add_host()]
    agents = [cluster.agent(host) for host in hosts]
    subnets = [_subnet(agent) for agent in agents]
    for agent, other in ((agents[0], subnets[1]), (agents[1], subnets[0])):
        wait_for(lambda: other in agent.routes(), what="route to %s" % other)
    containers = [lab.add_container(host, "%s/20" % (IPNetwork(subnet).network + 1))
                  for host, subnet in zip(hosts, subnets)]
    before = [_routes(host) for host in hosts]
    pinger = Pinger(containers[0].ns, containers[1].address, count=120, interval=0.1, answered_first=True)
    time.sleep(1)
    raw = cluster.registry._clients[0]
    for key, value in HOSTILE.items():
        raw.write(PREFIX + key, value, ttl=600)
    time.sleep(2)
    newcomer = cluster.agent(lab.add_host())  # starts with every hostile lease present
    joined = _subnet(newcomer)
    newcomer.wait_ready()
    for agent in agents:
        wait_for(lambda: joined in agent.routes(), what="route to the new host")
    sent, replies = pinger.result()
    record("%d hostile leases while pinging" % len(HOSTILE),
           "%d/%d pings answered; 3 agents healthy; new host got %s" % (replies, sent, joined))
    assert replies == sent, "%d/%d pings answered; echoes %s had none" % (replies, sent, pinger.lost)
    everyone = agents + [newcomer]
    for agent in everyone:
        status, body = agent.healthz()
        assert status == 200 and body.rstrip().endswith("bad leases skipped: %d" % len(HOSTILE)), body
        for key in HOSTILE:
            assert agent.log.count("skipping %s%s: " % (PREFIX, key)) == 1, (agent.host.name, key, agent.log)
        assert "Traceback" not in agent.log and "unhealthy" not in agent.log.split("skipping", 1)[1]
    for host, agent, routes in zip(hosts, agents, before):
        assert _routes(host) == routes | {joined}
        fdb = set(entry["dst"] for entry in agent.state()["fdb"])
        assert fdb == set(h.address for h in lab.hosts if h is not host)
    assert _routes(newcomer.host) - set(["default", "172.31.250.0/24"]) == set(subnets)
    assert joined not in [key.replace("-", "/") for key in HOSTILE]
