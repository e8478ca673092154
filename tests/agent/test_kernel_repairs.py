"""Repairs on kernel events (issue 20, step 2): a route, neighbour, FDB entry or the whole VXLAN
device deleted behind the running agent comes back at once, with the periodic reconcile off
(-reconcile-interval=3600), while containers ping across; the external interface's MTU is
followed live (device MTU, subnet.env) and a kernel refusal names the device and the MTUs; so is
its address (a new one moves the device and the lease's PublicIP to it, keeping the subnet).

Each restore's latency (from the deletion to the kernel announcing the entry back, read on a
listener of the host's own notifications) goes to build/reliability-figures.txt, never asserted.
"""

import json
import time

from netaddr import IPNetwork

from support.cluster import wait_for
from support.kernel_listener import Listener
from support.netns import Pinger, ping, run_in
from test_config_change import BASE, VXLAN_100, _digest, _in_force
from test_reliability import record

from ansible_collections.netlab.flannel.plugins.module_utils.flannel import netlink
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.netlink import deterministic_vtep_mac
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.netlink.events import (
    FdbEvent, NeighbourEvent, RouteEvent)

EVENTS_ONLY = "-reconcile-interval=3600"  # the backstop off: only the kernel events can repair
ROUNDS = 5  # deletions of each kind per test run
BACK_WITHIN = 5.0  # generous: a repair takes milliseconds; the reconcile would take an hour


def _cluster(lab, cluster, count):
    hosts = [lab.add_host() for _number in range(count)]
    agents = [cluster.agent(host, EVENTS_ONLY) for host in hosts]
    subnets = [IPNetwork(agent.wait_env()).cidr for agent in agents]
    for agent, subnet in zip(agents, subnets):
        wait_for(lambda: sorted(agent.routes()) == sorted(str(other) for other in subnets if other != subnet),
                 what="%s routing every peer" % agent.host.name)
    containers = [lab.add_container(host, "%s/20" % (subnet.network + 1)) for host, subnet in zip(hosts, subnets)]
    return hosts, agents, subnets, containers


def _percentiles(latencies):
    ordered = sorted(latencies)
    return "p50 %.1f ms, max %.1f ms over %d" % (1000 * ordered[len(ordered) // 2], 1000 * ordered[-1], len(ordered))


def test_deleted_route_neighbour_fdb_and_device_come_back_while_pinging(lab, cluster):
    hosts, agents, subnets, containers = _cluster(lab, cluster, 3)
    peer, peer_subnet = hosts[1], subnets[1]
    mac, gateway = deterministic_vtep_mac(peer.address, 100), str(peer_subnet.ip)
    listener = Listener(hosts[0])
    pinger = Pinger(containers[0].ns, containers[1].address, count=4 * ROUNDS * 10 + 30, interval=0.1, timeout=0.5)
    try:
        index = listener.kernel.link_lookup(ifname="flannel.100")[0]
        route = netlink.Route(str(peer_subnet), gateway, index, True)
        deletions = {
            "route": (lambda: netlink.delete_route(route, listener.kernel),
                      lambda e: isinstance(e, RouteEvent) and not e.removed and e.route == route),
            "neighbour": (lambda: netlink.delete_neighbour(index, gateway, listener.kernel),
                          lambda e: isinstance(e, NeighbourEvent) and not e.removed and e.ip == gateway
                          and e.permanent and e.mac == mac),
            "fdb": (lambda: netlink.delete_fdb(index, mac, peer.address, listener.kernel),
                    lambda e: isinstance(e, FdbEvent) and not e.removed and (e.mac, e.dst) == (mac, peer.address)),
        }
        for kind, (delete, restored) in sorted(deletions.items()):
            latencies = []
            for _round in range(ROUNDS):
                started = time.monotonic()
                delete()
                when = wait_for(lambda: listener.first_after(started, restored), BACK_WITHIN,
                                what="%s restored on %s (log:\n%s)" % (kind, hosts[0].name, agents[0].log))
                latencies.append(when - started)
                time.sleep(0.5)
            record("kernel events: deleted %s restored" % kind, _percentiles(latencies))
        state = agents[0].state()
        assert {"ip": gateway, "mac": mac} in state["neighbours"] and {"mac": mac, "dst": peer.address} in state["fdb"]
        assert agents[0].routes()[str(peer_subnet)]["gateway"] == gateway
        assert "repaired on a kernel event: restored neighbour %s lladdr %s" % (gateway, mac) in agents[0].log

        # The device: back with its address and every peer's entries.
        latencies = []
        for _round in range(ROUNDS):
            started = time.monotonic()
            listener.kernel.link("del", index=listener.kernel.link_lookup(ifname="flannel.100")[0])
            back = wait_for(lambda: listener.routes_back(started, [str(other) for other in subnets[1:]]), BACK_WITHIN,
                            what="every peer routed after the device was deleted (log:\n%s)" % agents[0].log)
            latencies.append(back - started)
            time.sleep(0.5)
        record("kernel events: deleted flannel.100 back with %d peers" % (len(subnets) - 1), _percentiles(latencies))
        state = agents[0].state()
        assert state["device"]["addresses"] == ["%s/32" % subnets[0].ip] and state["device"]["mtu"] == 1450
        assert sorted(agents[0].routes()) == sorted(str(other) for other in subnets[1:])
        assert ping(containers[0].ns, containers[2].address, count=2)
        # The entries' removals are announced before the device's: no restore is tried on a gone device.
        assert " ERROR " not in agents[0].log
    finally:
        sent, replies = pinger.result()
        listener.close()
    record("kernel events: pings during %d deletions of each kind" % ROUNDS, "%d of %d lost" % (sent - replies, sent))
    assert replies > 0
    assert agents[0].healthz()[0] == 200


def test_own_changes_are_not_repaired(lab, cluster):
    """A peer leaving and coming back, and a config switch, announce removals the agent made itself:
    none of them is 'repaired'."""
    hosts, agents, subnets, _containers = _cluster(lab, cluster, 2)
    agents[1].stop()
    cluster.raw.delete("/coreos.com/network/subnets/%s-20" % subnets[1].ip)
    wait_for(lambda: str(subnets[1]) not in agents[0].routes(), what="peer unrouted")
    agents.append(cluster.agent(hosts[1], EVENTS_ONLY))
    wait_for(lambda: len(agents[0].routes()) == 1, what="peer routed again")
    cluster.registry.put_config(json.dumps(dict(BASE, Backend={"Type": "host-gw"})))
    _in_force([agents[0], agents[2]], dict(BASE, Backend={"Type": "host-gw"}))
    cluster.registry.put_config(json.dumps(VXLAN_100))
    _in_force([agents[0], agents[2]], VXLAN_100)
    wait_for(lambda: len(agents[0].routes()) == 1, what="peer routed on vxlan again")
    assert "repaired on a kernel event" not in agents[0].log


def _set_mtu(lab, host, mtu):
    """The host's eth0 and its LAN side (the path the VXLAN packets take) to `mtu`."""
    lab_side = "lan-" + host.name
    if mtu > 1500:
        run_in(lab.lan_ns, ["ip", "link", "set", lab_side, "mtu", mtu])
        host.run(["ip", "link", "set", "eth0", "mtu", mtu])
    else:
        host.run(["ip", "link", "set", "eth0", "mtu", mtu])
        run_in(lab.lan_ns, ["ip", "link", "set", lab_side, "mtu", mtu])


def test_underlay_mtu_is_followed_live_and_a_refusal_names_the_mtus(lab, cluster):
    """As after an interrupted `make perf` (MTU 9000) and `make lab` (back to 1500): the device and
    subnet.env follow both ways, and the next backend switch starts."""
    hosts, agents, subnets, containers = _cluster(lab, cluster, 2)
    for mtu, device_mtu in ((9000, 8950), (1500, 1450)):
        for host in hosts:
            _set_mtu(lab, host, mtu)
        for agent in agents:
            wait_for(lambda: agent.state()["device"]["mtu"] == device_mtu and
                     agent.env().get("FLANNEL_MTU") == str(device_mtu), 10,
                     what="%s flannel.100 and subnet.env at MTU %d (log:\n%s)" % (agent.host.name, device_mtu,
                                                                                  agent.log))
        assert ping(containers[0].ns, containers[1].address, count=2)
    assert "eth0 MTU changed from 9000 to 1500" in agents[0].log
    # The switch that failed with "(22, 'Invalid argument')" while the agents kept MTU 9000.
    host_gw = dict(BASE, Backend={"Type": "host-gw"})
    cluster.registry.put_config(json.dumps(host_gw))
    _in_force(agents, host_gw)
    cluster.registry.put_config(json.dumps(VXLAN_100))
    _in_force(agents, VXLAN_100)
    assert agents[0].state()["device"]["mtu"] == 1450
    # An MTU the kernel cannot give: refused, naming the device and both MTUs; the host runs on.
    too_big = dict(BASE, Backend={"Type": "vxlan", "VNI": 200, "Port": 8472, "MTU": 9000})
    cluster.registry.put_config(json.dumps(too_big))
    wanted = ("cannot start backend vxlan for network config %s: the kernel refused to " % _digest(too_big),
              ": a vxlan device's MTU can be at most its parent's less 50 (device flannel.200 MTU 9000, "
              "parent eth0 MTU 1500, Backend.MTU 9000)")
    wait_for(lambda: all(part in agents[0].log for part in wanted), 15, what="the refusal in the log:\n%s" % agents[0].log)
    assert "Invalid argument" not in agents[0].log
    wait_for(lambda: agents[0].healthz()[0] == 200, what="healthy on the last good config (%s)" % (agents[0].healthz(),))
    assert ping(containers[0].ns, containers[1].address, count=2)


def test_a_new_underlay_address_moves_the_device_and_the_lease_public_ip(lab, cluster):
    """The external interface's address in use is replaced (a host renumbered, a DHCP lease with a
    new address): the agent keeps its subnet, recreates flannel.100 on the new address with the
    VtepMAC derived from it, publishes the new PublicIP (compare-and-swap), the peer follows, and
    the containers ping across again. flanneld v0.10 would publish the old address until restarted."""
    hosts, agents, subnets, containers = _cluster(lab, cluster, 2)
    host, old = hosts[0], hosts[0].address
    new = old.rsplit(".", 1)[0] + ".200"  # free on the lab's LAN: hosts are numbered from .11 up
    # Renumbered by hand: for a moment eth0 has no address (deleting the primary address of a
    # prefix would take an address added beside it in the same prefix along).
    host.run(["ip", "addr", "del", old + "/24", "dev", "eth0"])
    host.run(["ip", "addr", "add", new + "/24", "dev", "eth0"])

    def lease():
        return json.loads(cluster.lease_value(str(subnets[0])))

    wait_for(lambda: "now on eth0's address %s, public IP %s" % (new, new) in agents[0].log, 30,
             what="the agent on the new address (lease %s; log:\n%s)" % (lease(), agents[0].log))
    assert "eth0 no longer holds %s: moving to its address %s" % (old, new) in agents[0].log
    assert lease()["PublicIP"] == new and lease()["BackendData"]["VtepMAC"] == deterministic_vtep_mac(new, 100)
    assert IPNetwork(agents[0].env()["FLANNEL_SUBNET"]).cidr == subnets[0]  # the same subnet
    assert agents[0].state()["device"]["local"] == new
    wanted = {"mac": deterministic_vtep_mac(new, 100), "dst": new}
    wait_for(lambda: agents[1].state()["fdb"] == [wanted], 15,
             what="the peer's FDB entry for %s (state %s)" % (new, agents[1].state()))
    wait_for(lambda: ping(containers[0].ns, containers[1].address, count=1), 15, what="containers ping across")
    assert ping(containers[1].ns, containers[0].address, count=2)
    # Its /healthz listens on the old address (-healthz-ip, as the cluster starts it): its log says.
    wait_for(lambda: [line for line in agents[0].log.splitlines() if " health: " in line][-1].endswith(
        "health: ok (lease %s, 1 peers, config in force %s)" % (subnets[0], _digest(VXLAN_100))),
        what="healthy on the new address (log:\n%s)" % agents[0].log)
    assert "ERROR" not in agents[0].log
