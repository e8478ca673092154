"""Mixed clusters: upstream flanneld v0.10.0 and our agent on one etcd, on namespace hosts.

Every test runs both agents as real processes. Where one of upstream's known bugs bites, the test
pins what upstream really does (and says so in its name and comments) instead of avoiding it.
"""

import signal

import pytest
from netaddr import IPNetwork

from support.cluster import TUTORIAL_CONFIG, Cluster, wait_for
from support.netns import Pinger, ping

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import LeaseAttrs
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.netlink import deterministic_vtep_mac

pytestmark = pytest.mark.usefixtures("upstream")

HOST_GW_CONFIG = '{"Network": "10.0.0.0/8", "SubnetLen": 20, "Backend": {"Type": "host-gw"}}'


def _subnet(agent):
    return IPNetwork(agent.wait_env()).cidr


def _container(lab, host, subnet):
    return lab.add_container(host, "%s/%d" % (subnet.network + 1, subnet.prefixlen))


def _vxlan_entries(peer_host, peer_subnet, peer_mac):
    """The neighbour, FDB entry and route a vxlan agent should hold for one peer."""
    return ([{"ip": str(peer_subnet.ip), "mac": peer_mac}], [{"mac": peer_mac, "dst": peer_host.address}],
            [{"dst": str(peer_subnet), "gateway": str(peer_subnet.ip), "onlink": True}])


def _held_vxlan_entries(agent):
    state = agent.state()
    return state["neighbours"], state["fdb"], state["routes"]


def _host_gw_route(peer_host, peer_subnet):
    return {"dst": str(peer_subnet), "gateway": peer_host.address, "onlink": False}


def _host_gw_routes(agent):
    """The overlay routes on the host's eth0 (its default route left out)."""
    return [route for route in agent.state("eth0")["routes"] if IPNetwork(route["dst"]) in IPNetwork("10.0.0.0/8")]


def _pings_both_ways(one, two, count=2):
    return len(ping(one.ns, two.address, count=count)) == count and len(ping(two.ns, one.address, count=count)) == count


def test_vxlan_upstream_and_ours_read_each_others_leases_and_ping(lab, cluster):
    hosts = [lab.add_host(), lab.add_host()]
    agents = [cluster.agent(hosts[0], kind="upstream"), cluster.agent(hosts[1])]
    subnets = [_subnet(agent) for agent in agents]
    devices = [agent.state()["device"] for agent in agents]
    macs = [device["mac"] for device in devices]
    assert macs[1] == deterministic_vtep_mac(hosts[1].address, 100) != macs[0]  # upstream's is the kernel's
    for host, agent, subnet, device in zip(hosts, agents, subnets, devices):
        assert cluster.lease_value(str(subnet)) == (
            '{"PublicIP":"%s","BackendType":"vxlan","BackendData":{"VtepMAC":"%s"}}' % (host.address, device["mac"]))
        with open(agent.subnet_file) as handle:
            assert handle.read() == ("FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=%s/20\nFLANNEL_MTU=1450\n"
                                     "FLANNEL_IPMASQ=false\n" % (subnet.network + 1))
        assert (device["vni"], device["port"], device["local"], device["learning"], device["mtu"],
                device["link_name"], device["addresses"]) == (
            100, 8472, host.address, False, 1450, "eth0", ["%s/32" % subnet.ip])
    for agent, peer_host, peer_subnet, peer_mac in ((agents[0], hosts[1], subnets[1], macs[1]),
                                                    (agents[1], hosts[0], subnets[0], macs[0])):
        expected = _vxlan_entries(peer_host, peer_subnet, peer_mac)
        wait_for(lambda: _held_vxlan_entries(agent) == expected,
                 what="%s agent on %s programming %s" % (agent.kind, agent.host.name, peer_subnet))
    one, two = _container(lab, hosts[0], subnets[0]), _container(lab, hosts[1], subnets[1])
    assert _pings_both_ways(one, two)


def test_host_gw_upstream_and_ours_read_each_others_leases_and_ping(lab, agent_path):
    with Cluster(lab, agent_path, config=HOST_GW_CONFIG, name="mixed-host-gw") as cluster:
        hosts = [lab.add_host(), lab.add_host()]
        agents = [cluster.agent(hosts[0]), cluster.agent(hosts[1], kind="upstream")]
        subnets = [_subnet(agent) for agent in agents]
        for host, agent, subnet in zip(hosts, agents, subnets):
            assert cluster.lease_value(str(subnet)) == '{"PublicIP":"%s","BackendType":"host-gw"}' % host.address
            assert agent.env() == {"FLANNEL_NETWORK": "10.0.0.0/8", "FLANNEL_SUBNET": "%s/20" % (subnet.network + 1),
                                   "FLANNEL_MTU": "1500", "FLANNEL_IPMASQ": "false"}
        for agent, peer_host, peer_subnet in ((agents[0], hosts[1], subnets[1]), (agents[1], hosts[0], subnets[0])):
            wait_for(lambda: _host_gw_routes(agent) == [_host_gw_route(peer_host, peer_subnet)],
                     what="%s agent routing %s via %s" % (agent.kind, peer_subnet, peer_host.address))
        one, two = _container(lab, hosts[0], subnets[0]), _container(lab, hosts[1], subnets[1])
        assert _pings_both_ways(one, two)


@pytest.mark.parametrize("backend", ["vxlan", "host-gw"])
def test_either_side_killed_or_restarted_while_the_other_keeps_forwarding(lab, agent_path, backend):
    config = HOST_GW_CONFIG if backend == "host-gw" else TUTORIAL_CONFIG
    with Cluster(lab, agent_path, config=config, name="mixed-restart-" + backend) as cluster:
        hosts = [lab.add_host(), lab.add_host()]
        agents = [cluster.agent(hosts[0], kind="upstream"), cluster.agent(hosts[1])]
        subnets = [_subnet(agent) for agent in agents]
        for agent in agents:
            agent.wait_ready()

        def held(number):
            agent = agents[number]
            return _host_gw_routes(agent) if backend == "host-gw" else _held_vxlan_entries(agent)

        def expected(number):
            peer = 1 - number
            if backend == "host-gw":
                return [_host_gw_route(hosts[peer], subnets[peer])]
            return _vxlan_entries(hosts[peer], subnets[peer], agents[peer].state()["device"]["mac"])

        for number in (0, 1):
            wait_for(lambda: held(number) == expected(number), what="%s programming its peer" % agents[number].kind)
        containers = [_container(lab, host, subnet) for host, subnet in zip(hosts, subnets)]
        for victim in (0, 1):
            for sig in (signal.SIGKILL, signal.SIGTERM):
                survivor = 1 - victim
                before = held(survivor)
                pingers = [Pinger(source.ns, target.address, count=60, interval=0.05, answered_first=True)
                           for source, target in ((containers[0], containers[1]), (containers[1], containers[0]))]
                kind = agents[victim].kind
                assert agents[victim].stop(sig) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
                assert held(survivor) == before and held(victim) == expected(victim)  # data plane left in place
                agents[victim] = cluster.agent(hosts[victim], kind=kind)
                agents[victim].wait_ready()
                assert _subnet(agents[victim]) == subnets[victim]
                wait_for(lambda: held(victim) == expected(victim), what="restarted %s agent programming" % kind)
                assert held(survivor) == before
                results = [pinger.result() for pinger in pingers]
                assert all(sent == replies for sent, replies in results), (
                    "%s of %s agent: (sent, replies) both ways %s" % (sig.name, kind, results))


def test_vxlan_host_moved_from_upstream_to_ours_and_back_keeps_its_subnet(lab, cluster):
    mover_host, ours_host, upstream_host = lab.add_host(), lab.add_host(), lab.add_host()
    mover = cluster.agent(mover_host, kind="upstream")
    observers = [cluster.agent(ours_host), cluster.agent(upstream_host, kind="upstream")]
    subnet = _subnet(mover)
    mover.wait_ready()
    upstream_mac = mover.state()["device"]["mac"]
    containers = [_container(lab, host, _subnet(agent)) for host, agent in
                  ((mover_host, mover), (ours_host, observers[0]), (upstream_host, observers[1]))]
    for observer in observers:
        wait_for(lambda: {"mac": upstream_mac, "dst": mover_host.address} in observer.state()["fdb"],
                 what="%s observer programming the upstream mover" % observer.kind)
    assert all(_pings_both_ways(containers[0], other) for other in containers[1:])

    # To ours: same subnet (found by public IP), but the device takes our derived VtepMAC, so the
    # lease changes and every peer must re-program the mover.
    assert mover.stop(signal.SIGTERM) == 0
    mover = cluster.agent(mover_host)
    mover.wait_ready()
    ours_mac = deterministic_vtep_mac(mover_host.address, 100)
    assert _subnet(mover) == subnet and mover.state()["device"]["mac"] == ours_mac
    assert "found lease %s for current IP %s, reusing" % (subnet, mover_host.address) in mover.log
    assert cluster.lease_value(str(subnet)) == (
        '{"PublicIP":"%s","BackendType":"vxlan","BackendData":{"VtepMAC":"%s"}}' % (mover_host.address, ours_mac))

    def mover_fdb(observer):
        return [entry["mac"] for entry in observer.state()["fdb"] if entry["dst"] == mover_host.address]

    for observer in observers:
        wait_for(lambda: {"ip": str(subnet.ip), "mac": ours_mac} in observer.state()["neighbours"],
                 what="%s observer re-programming the mover's new VtepMAC" % observer.kind)
    wait_for(lambda: mover_fdb(observers[0]) == [ours_mac], what="ours removing the stale FDB entry")
    # Upstream never deletes the FDB entry of a peer's previous VtepMAC (harmless: nothing routes to it).
    assert sorted(mover_fdb(observers[1])) == sorted([upstream_mac, ours_mac])
    assert all(_pings_both_ways(containers[0], other) for other in containers[1:])

    # And back: upstream reuses the compatible device, hence our VtepMAC; the lease does not change.
    assert mover.stop(signal.SIGTERM) == 0
    mover = cluster.agent(mover_host, kind="upstream")
    mover.wait_ready()
    assert "Found lease (%s) for current IP (%s), reusing" % (subnet, mover_host.address) in mover.log
    assert _subnet(mover) == subnet and mover.state()["device"]["mac"] == ours_mac
    assert cluster.lease_value(str(subnet)) == (
        '{"PublicIP":"%s","BackendType":"vxlan","BackendData":{"VtepMAC":"%s"}}' % (mover_host.address, ours_mac))
    assert all(_pings_both_ways(containers[0], other) for other in containers[1:])


def test_host_gw_host_moved_from_upstream_to_ours_and_back_keeps_its_subnet(lab, agent_path):
    with Cluster(lab, agent_path, config=HOST_GW_CONFIG, name="mixed-move-host-gw") as cluster:
        mover_host, ours_host, upstream_host = lab.add_host(), lab.add_host(), lab.add_host()
        mover = cluster.agent(mover_host, kind="upstream")
        observers = [cluster.agent(ours_host), cluster.agent(upstream_host, kind="upstream")]
        subnet = _subnet(mover)
        value = cluster.lease_value(str(subnet))
        containers = [_container(lab, host, _subnet(agent)) for host, agent in
                      ((mover_host, mover), (ours_host, observers[0]), (upstream_host, observers[1]))]
        for observer in observers:
            wait_for(lambda: _host_gw_route(mover_host, subnet) in _host_gw_routes(observer),
                     what="%s observer routing the upstream mover" % observer.kind)
        assert all(_pings_both_ways(containers[0], other) for other in containers[1:])
        for kind in ("ours", "upstream"):
            assert mover.stop(signal.SIGTERM) == 0
            mover = cluster.agent(mover_host, kind=kind)
            mover.wait_ready()
            # host-gw leases carry no backend data: both agents write the same value.
            assert _subnet(mover) == subnet and cluster.lease_value(str(subnet)) == value
            for observer in observers:
                assert _host_gw_route(mover_host, subnet) in _host_gw_routes(observer)
            reused = "found lease %s for current IP %s, reusing" if kind == "ours" else \
                "Found lease (%s) for current IP (%s), reusing"
            assert reused % (subnet, mover_host.address) in mover.log
            assert all(_pings_both_ways(containers[0], other) for other in containers[1:])


def test_deleted_lease_upstream_exits_0_and_ours_reacquires(lab, cluster):
    hosts = [lab.add_host(), lab.add_host()]
    upstream, ours = cluster.agent(hosts[0], "-v=2", kind="upstream"), cluster.agent(hosts[1])
    upstream_subnet, ours_subnet = _subnet(upstream), _subnet(ours)
    for agent in (upstream, ours):
        agent.wait_ready()
    raw = cluster.registry._clients[0]
    for agent, peer_subnet in ((upstream, ours_subnet), (ours, upstream_subnet)):
        wait_for(lambda: str(peer_subnet) in agent.routes(), what="%s agent routing its peer" % agent.kind)

    raw.delete("/coreos.com/network/subnets/%s-20" % ours_subnet.ip)
    wait_for(lambda: cluster.registry.get_lease(ours_subnet), what="ours re-acquiring its subnet")
    wait_for(lambda: str(ours_subnet) in upstream.routes() and "removing subnet: %s" % ours_subnet in upstream.log,
             what="upstream unrouting, then routing again, the re-acquired subnet")
    assert ours.process.poll() is None

    # Upstream's known failure: its own lease deleted, it exits 0 (so systemd's Restart=on-failure
    # would leave it down), leaving its data plane behind; ours unroutes the subnet.
    raw.delete("/coreos.com/network/subnets/%s-20" % upstream_subnet.ip)
    upstream.process.wait(10)
    assert upstream.process.returncode == 0 and "Lease has been revoked" in upstream.log
    wait_for(lambda: str(upstream_subnet) not in ours.routes(), what="ours unrouting the revoked subnet")
    assert str(ours_subnet) in upstream.routes()
    # Started again, upstream takes its previous subnet back from the subnet file.
    again = cluster.agent(hosts[0], kind="upstream")
    again.wait_ready()
    assert "Previous Subnet: %s" % upstream_subnet in again.log and _subnet(again) == upstream_subnet
    wait_for(lambda: str(upstream_subnet) in ours.routes(), what="ours routing upstream's subnet again")


def test_upstream_misses_a_changed_vtep_mac_on_resync_where_ours_does_not(lab, cluster):
    """Upstream's known resync bug (flannel #533/#1036), pinned: after etcd's event history moved
    past its watch, upstream re-lists but only diffs subnets, so a peer whose VtepMAC changed
    meanwhile keeps the old MAC and becomes unreachable until upstream is restarted."""
    mover_host, ours_host, upstream_host = lab.add_host(), lab.add_host(), lab.add_host()
    mover = cluster.agent(mover_host, kind="upstream")
    observers = [cluster.agent(ours_host), cluster.agent(upstream_host, "-v=2", kind="upstream")]
    subnet = _subnet(mover)
    for agent in [mover] + observers:
        agent.wait_ready()
    old_mac = mover.state()["device"]["mac"]
    for observer in observers:
        wait_for(lambda: {"ip": str(subnet.ip), "mac": old_mac} in observer.state()["neighbours"],
                 what="%s observer programming the mover" % observer.kind)
    # Freeze both observers, then answer their pending watches with a harmless fake peer, so their
    # next watch asks for an index that etcd's 1000-event history has dropped by the time they wake.
    for observer in observers:
        observer.freeze()
    fake = LeaseAttrs("172.31.250.98", "vxlan", "0e:00:00:00:00:98")
    cluster.registry.create_lease(IPNetwork("10.98.0.0/20"), fake, 600)
    assert mover.stop(signal.SIGTERM) == 0
    mover = cluster.agent(mover_host)  # ours takes over: same subnet, a new VtepMAC
    mover.wait_ready()
    new_mac = mover.state()["device"]["mac"]
    assert _subnet(mover) == subnet and new_mac != old_mac
    raw = cluster.registry._clients[0]
    for number in range(1001):
        raw.write("/netlab-test/churn", str(number))
    late = IPNetwork("10.97.0.0/20")  # only a re-list can show this one to a woken observer
    # A VtepMAC of its own: one copying the fake peer's would be skipped as a conflict.
    cluster.registry.create_lease(late, LeaseAttrs("172.31.250.97", "vxlan", "0e:00:00:00:00:97"), 600)
    for observer in observers:
        observer.process.send_signal(signal.SIGCONT)
    for observer in observers:
        wait_for(lambda: str(late) in observer.routes(), what="%s observer re-listing after the freeze" % observer.kind)
    assert "etcd index outside history window" in observers[1].log
    assert {"ip": str(subnet.ip), "mac": new_mac} in observers[0].state()["neighbours"]
    assert {"ip": str(subnet.ip), "mac": old_mac} in observers[1].state()["neighbours"]  # the bug
    containers = [_container(lab, host, _subnet(agent)) for host, agent in
                  ((mover_host, mover), (ours_host, observers[0]), (upstream_host, observers[1]))]
    assert _pings_both_ways(containers[0], containers[1])
    assert ping(containers[2].ns, containers[0].address, count=2, timeout=1) == []
    # Restarting upstream is the only repair: its start-up listing replaces the neighbour.
    observers[1].stop(signal.SIGTERM)
    observers[1] = cluster.agent(upstream_host, kind="upstream")
    wait_for(lambda: {"ip": str(subnet.ip), "mac": new_mac} in observers[1].state()["neighbours"],
             what="restarted upstream programming the new VtepMAC")
    assert _pings_both_ways(containers[0], containers[2])
