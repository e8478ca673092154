"""The agent end to end: real processes (the built zipapp) on namespace hosts, a real etcd."""

import os
import signal

import pytest
from netaddr import IPNetwork

from support.cluster import Cluster, wait_for
from support.netns import ping

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.netlink import deterministic_vtep_mac

# For tests of the watch-event path: a periodic reconcile (300 s by default, shorter where a test
# sets it) would repair whatever an event failed to program, and hide the failure.
EVENTS_ONLY = "-reconcile-interval=3600"
# The cases that also run against etcd's v3 API (etcd with v2 off, agents with -etcd-api=v3).
BOTH_APIS = pytest.mark.parametrize("etcd_api", ["v2", "v3"])


def _subnet(agent):
    return IPNetwork(agent.wait_env()).cidr


def _routed(agent, subnet):
    return str(subnet) in agent.routes()


@BOTH_APIS
def test_three_hosts_lease_program_and_ping_across_vxlan(lab, cluster):
    hosts = [lab.add_host() for _number in range(3)]
    agents = [cluster.agent(host, EVENTS_ONLY) for host in hosts]
    subnets = [_subnet(agent) for agent in agents]
    assert len(set(subnets)) == 3
    for host, agent, subnet in zip(hosts, agents, subnets):
        mac = deterministic_vtep_mac(host.address, 100)
        assert cluster.lease_json(str(subnet)) == (
            '{"PublicIP":"%s","BackendType":"vxlan","BackendData":{"VtepMAC":"%s"}}' % (host.address, mac))
        with open(agent.subnet_file) as handle:
            assert handle.read() == ("FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=%s/20\nFLANNEL_MTU=1450\n"
                                     "FLANNEL_IPMASQ=false\n" % (subnet.network + 1))
        device = agent.state()["device"]
        assert (device["name"], device["vni"], device["port"], device["local"], device["learning"],
                device["mtu"], device["mac"], device["link_name"], device["addresses"]) == (
            "flannel.100", 100, 8472, host.address, False, 1450, mac, "eth0", ["%s/32" % subnet.ip])
    for agent, subnet in zip(agents, subnets):
        for other, other_subnet, host in zip(agents, subnets, hosts):
            if other is agent:
                continue
            wait_for(lambda: _routed(agent, other_subnet), what="route to %s" % other_subnet)
            state = agent.state()
            mac = deterministic_vtep_mac(host.address, 100)
            assert {"ip": str(other_subnet.ip), "mac": mac} in state["neighbours"]
            assert {"mac": mac, "dst": host.address} in state["fdb"]
            route = agent.routes()[str(other_subnet)]
            assert (route["gateway"], route["onlink"]) == (str(other_subnet.ip), True)
    first = lab.add_container(hosts[0], "%s/20" % (subnets[0].network + 1))
    third = lab.add_container(hosts[2], "%s/20" % (subnets[2].network + 1))
    assert ping(first.ns, third.address, count=3) and ping(third.ns, first.address, count=1)
    for agent in agents:
        assert agent.healthz()[0] == 200
    # The offload decision is logged at start-up; this kernel (5.7 or newer) keeps the default.
    assert "tx checksum offload on flannel.100: on (auto: kernel %s is 5.7 or newer" % os.uname().release \
        in agents[0].log


def test_vxlan_offload_flag_off_reaches_the_device(lab, cluster):
    host = lab.add_host()
    agent = cluster.agent(host, "-vxlan-offload=off")
    agent.wait_env()
    shown = host.run(["ethtool", "-k", "flannel.100"]).stdout
    assert "tx-checksum-ip-generic: off" in shown and "tx-tcp-segmentation: off" in shown
    assert "tx checksum offload on flannel.100: off (set by -vxlan-offload=off)" in agent.log


@BOTH_APIS
def test_late_joiner_is_routed_and_bad_keys_do_not_stall_the_watch(lab, cluster):
    first = cluster.agent(lab.add_host(), EVENTS_ONLY)
    first_subnet = _subnet(first)
    wait_for(lambda: first.healthz()[0] == 200, what="first agent healthy")
    raw = cluster.raw
    raw.write("/coreos.com/network/subnets/not-a-subnet", "junk")
    raw.write("/coreos.com/network/subnets/10.77.0.0-20", "{broken json")
    late = cluster.agent(lab.add_host(), EVENTS_ONLY)
    late_subnet = _subnet(late)
    wait_for(lambda: _routed(first, late_subnet), what="first agent routing the late joiner")
    wait_for(lambda: _routed(late, first_subnet), what="late joiner routing the first agent")
    assert "10.77.0.0/20" not in first.routes()
    assert "skipping /coreos.com/network/subnets/not-a-subnet" in first.log


@BOTH_APIS
def test_deleted_lease_is_unrouted_by_peers_and_reacquired_by_owner(lab, cluster):
    owner, peer = cluster.agent(lab.add_host(), EVENTS_ONLY), cluster.agent(lab.add_host(), EVENTS_ONLY)
    subnet, peer_subnet = _subnet(owner), _subnet(peer)
    wait_for(lambda: _routed(peer, subnet), what="peer routing the owner")
    wait_for(lambda: _routed(owner, peer_subnet), what="owner routing the peer")
    cluster.raw.delete("/coreos.com/network/subnets/%s-20" % subnet.ip)
    wait_for(lambda: cluster.registry.get_lease(subnet), what="owner re-acquiring its subnet")
    assert cluster.registry.get_lease(subnet).attrs.public_ip == owner.host.address
    wait_for(lambda: "peer removed: %s" % subnet in peer.log, what="peer seeing the removal")
    wait_for(lambda: _routed(peer, subnet), what="peer routing the re-acquired subnet")
    assert "re-acquiring" in owner.log and owner.process.poll() is None
    assert IPNetwork(owner.env()["FLANNEL_SUBNET"]).cidr == subnet


@BOTH_APIS
def test_restart_keeps_subnet_and_vtep_mac(lab, cluster):
    host = lab.add_host()
    agent = cluster.agent(host)
    subnet = _subnet(agent)
    mac = agent.state()["device"]["mac"]
    assert agent.stop(signal.SIGTERM) == 0
    assert agent.state()["device"]["mac"] == mac  # data plane left in place
    cluster.raw.delete("/coreos.com/network/subnets/%s-20" % subnet.ip)  # even without the lease
    again = cluster.agent(host)
    wait_for(lambda: again.healthz()[0] == 200, what="restarted agent healthy")
    assert _subnet(again) == subnet and again.state()["device"]["mac"] == mac
    again.stop(signal.SIGKILL)
    third = cluster.agent(host)
    wait_for(lambda: third.healthz()[0] == 200, what="agent healthy after SIGKILL")
    assert _subnet(third) == subnet and third.state()["device"]["mac"] == mac


def test_route_deleted_by_hand_comes_back(lab, cluster):
    hosts = [lab.add_host(), lab.add_host()]
    # The reconcile, the backstop: repairs on the kernel's notifications off (tests/agent/test_kernel_repairs.py).
    watcher = cluster.agent(hosts[0], "-reconcile-interval=1", "-repair-on-events=false")
    other = cluster.agent(hosts[1])
    other_subnet = _subnet(other)
    wait_for(lambda: _routed(watcher, other_subnet), what="initial route")
    hosts[0].run(["ip", "route", "del", str(other_subnet), "dev", "flannel.100"])
    hosts[0].run(["ip", "neigh", "del", str(other_subnet.ip), "dev", "flannel.100"])
    assert not _routed(watcher, other_subnet)
    wait_for(lambda: _routed(watcher, other_subnet), timeout=5, what="route restored by reconcile")
    assert "reconcile repaired" in watcher.log


def test_changed_vtep_mac_is_reprogrammed(lab, cluster):
    watcher = cluster.agent(lab.add_host(), EVENTS_ONLY)
    _subnet(watcher)
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import LeaseAttrs

    fake = IPNetwork("10.50.0.0/20")
    lease = cluster.registry.create_lease(fake, LeaseAttrs("172.31.250.99", "vxlan", "0e:00:00:00:00:01"), 600)
    wait_for(lambda: {"mac": "0e:00:00:00:00:01", "dst": "172.31.250.99"} in watcher.state()["fdb"],
             what="fdb for the fake peer")
    cluster.registry.update_lease(lease, LeaseAttrs("172.31.250.98", "vxlan", "0e:00:00:00:00:02"), 600)
    wait_for(lambda: {"mac": "0e:00:00:00:00:02", "dst": "172.31.250.98"} in watcher.state()["fdb"],
             what="fdb for the changed peer")
    state = watcher.state()
    assert {"mac": "0e:00:00:00:00:01", "dst": "172.31.250.99"} not in state["fdb"]
    assert {"ip": "10.50.0.0", "mac": "0e:00:00:00:00:02"} in state["neighbours"]


def test_host_gw_ping(lab, agent_path):
    config = '{"Network": "10.0.0.0/8", "SubnetLen": 20, "Backend": {"Type": "host-gw"}}'
    with Cluster(lab, agent_path, config=config) as cluster:
        hosts = [lab.add_host(), lab.add_host()]
        agents = [cluster.agent(host) for host in hosts]
        subnets = [_subnet(agent) for agent in agents]
        wait_for(lambda: {"dst": str(subnets[1]), "gateway": hosts[1].address, "onlink": False}
                 in agents[0].state("eth0")["routes"], what="host-gw route via the peer")
        assert cluster.lease_json(str(subnets[0])) == '{"PublicIP":"%s","BackendType":"host-gw"}' % hosts[0].address
        one = lab.add_container(hosts[0], "%s/20" % (subnets[0].network + 1))
        two = lab.add_container(hosts[1], "%s/20" % (subnets[1].network + 1))
        wait_for(lambda: ping(one.ns, two.address, count=1), what="host-gw ping")


def test_bad_config_is_reported_and_polled_until_fixed(lab, agent_path):
    with Cluster(lab, agent_path, config='{"Network": "10.0.0.0/8", "SubnetLen": 31, "Backend": {"Type": "vxlan"}}') \
            as cluster:
        agent = cluster.agent(lab.add_host())
        wait_for(lambda: "SubnetLen: SubnetLen must be less than /31" in agent.log, what="rejection logged")
        status, body = wait_for(lambda: agent.healthz()[0] and agent.healthz(), what="healthz answering")
        assert status == 503 and "SubnetLen must be less than /31" in body
        cluster.registry.put_config('{"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "VNI": 100}}')
        assert IPNetwork(agent.wait_env()).prefixlen == 24
        assert agent.process.poll() is None


def test_missing_config_then_out_of_subnets(lab, agent_path):
    with Cluster(lab, agent_path, config=None) as cluster:
        agent = cluster.agent(lab.add_host())
        wait_for(lambda: "does not exist in etcd" in agent.log, what="missing config logged")
        cluster.registry.put_config('{"Network": "10.0.0.0/16", "SubnetLen": 24, "SubnetMin": "10.0.1.0", '
                                    '"SubnetMax": "10.0.1.0", "Backend": {"Type": "vxlan"}}')
        _subnet(agent)
        late = cluster.agent(lab.add_host())
        wait_for(lambda: "no free subnet" in late.log, what="no free subnet logged")
        status, body = late.healthz()
        assert status == 503 and "no free subnet" in body
        assert late.process.poll() is None and agent.healthz()[0] == 200


def test_ip_masq_rules_installed_and_kept(lab, cluster):
    host = lab.add_host()
    agent = cluster.agent(host, "-ip-masq", "-reconcile-interval=1")
    subnet = _subnet(agent)
    assert agent.env()["FLANNEL_IPMASQ"] == "true"

    def masquerade_rules():
        listing = host.run(["iptables", "-w", "-t", "nat", "-S", "POSTROUTING"]).stdout
        return [line for line in listing.splitlines() if "flanneld masq" in line]

    rules = wait_for(lambda: len(masquerade_rules()) == 4 and masquerade_rules(), what="four masquerade rules")
    assert "-d %s" % subnet in rules[2] and rules[1].endswith("-j MASQUERADE")
    host.run(["iptables", "-w", "-t", "nat", "-F", "POSTROUTING"])
    assert wait_for(lambda: masquerade_rules() == rules, timeout=5, what="rules restored in order")


@BOTH_APIS
def test_two_hosts_with_one_public_ip_never_share_a_subnet(lab, cluster):
    first_host, second_host = lab.add_host(), lab.add_host()
    first = cluster.agent(first_host, "-host-id=host-one")
    subnet = _subnet(first)
    second = cluster.agent(second_host, "-public-ip=%s" % first_host.address, "-host-id=host-two")
    wait_for(lambda: "already used by another live host (host id host-one" in second.log, what="duplicate reported")
    status, body = second.healthz()
    assert status == 503 and "must not share a public IP" in body
    leases = cluster.registry.list_leases().leases
    assert [(lease.subnet, lease.attrs.public_ip) for lease in leases] == [(subnet, first_host.address)]
    assert second.env() == {} and second.process.poll() is None
