"""A dual-stack network beside upstream flanneld v0.10.0 (IPv4 only, issue 24), on namespace hosts
with a real etcd: what v0.10 really does with the dual-stack keys A.B.C.D-LEN&IPv6-LEN.

v0.10 finds a subnet in a key with an unanchored pattern, so it reads a dual-stack key as the
IPv4 subnet before the '&': it never hands that subnet out again and routes to it. What it gets
wrong is a host moved from a dual-stack agent to v0.10: v0.10 adopts the dual-stack lease by its
PublicIP and writes its own plain key beside it, and when the dual-stack key later goes (it
expires, no one renews it) v0.10 peers unroute the subnet the plain key still holds. The flanneld
role therefore refuses upstream flanneld on a dual-stack network (tests/unit/playbooks).
"""

import json

import pytest
from netaddr import IPNetwork

from support.cluster import Cluster, wait_for
from support.netns import ping

pytestmark = pytest.mark.usefixtures("upstream")

DUAL = {"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0",
        "EnableIPv6": True, "IPv6Network": "fd00:10::/48", "Backend": {"Type": "vxlan", "VNI": 100}}


def _subnet(agent):
    return IPNetwork(agent.wait_env()).cidr


def _keys(cluster):
    node = cluster.raw.read("/coreos.com/network/subnets", recursive=True)
    return sorted(child.key.rsplit("/", 1)[1] for child in node.children if child.key and not child.dir)


def test_upstream_never_takes_a_subnet_a_dual_stack_key_holds(lab, agent_path):
    only_one = dict(DUAL, SubnetMin="10.10.0.0", SubnetMax="10.10.0.0")
    with Cluster(lab, agent_path, config=json.dumps(only_one), name="v010-one-subnet") as cluster:
        ours = cluster.agent(lab.add_host())
        ours.wait_ready()
        held = _keys(cluster)
        assert len(held) == 1 and held[0].startswith("10.10.0.0-20&fd00:10:")
        upstream = cluster.agent(lab.add_host(), kind="upstream")
        wait_for(lambda: "out of subnets" in upstream.log.lower(), timeout=20,
                 what="upstream finding no free subnet (log:\n%s)" % upstream.log)
        assert _keys(cluster) == held and "FLANNEL_SUBNET" not in upstream.env()


def test_upstream_routes_ipv4_to_dual_stack_hosts_and_back(lab, agent_path):
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="v010-routes") as cluster:
        hosts = [lab.add_host(), lab.add_host()]
        agents = [cluster.agent(hosts[0]), cluster.agent(hosts[1], "-v=2", kind="upstream")]
        subnets = [_subnet(agent) for agent in agents]
        for agent in agents:
            agent.wait_ready()
        assert "FLANNEL_IPV6_SUBNET" in agents[0].env() and "FLANNEL_IPV6_SUBNET" not in agents[1].env()
        assert subnets[0] != subnets[1]
        for agent, peer in ((agents[0], subnets[1]), (agents[1], subnets[0])):
            wait_for(lambda: str(peer) in agent.routes(), what="%s agent routing %s" % (agent.kind, peer))
        one, two = (lab.add_container(host, "%s/20" % (subnet.ip + 1)) for host, subnet in zip(hosts, subnets))
        assert len(ping(one.ns, two.address, count=2)) == 2 and len(ping(two.ns, one.address, count=2)) == 2

        # IPv6 turned off and on again: ours re-keys its lease (delete, then create at the new key),
        # which upstream follows as a removal and an addition of the same subnet.
        ipv4_only = dict(DUAL)
        del ipv4_only["EnableIPv6"], ipv4_only["IPv6Network"]
        for config, dual_stack in ((ipv4_only, False), (DUAL, True)):
            cluster.registry.put_config(json.dumps(config))
            wait_for(lambda: ("FLANNEL_IPV6_SUBNET" in agents[0].env()) == dual_stack, timeout=20,
                     what="ours on the new config")
            wait_for(lambda: str(subnets[0]) in agents[1].routes(), what="upstream routing ours again")
            # The re-key is a removal and an addition for every peer: a ping may be lost in between.
            wait_for(lambda: len(ping(two.ns, one.address, count=1)) == 1, what="pings through again")
            assert len(ping(two.ns, one.address, count=2)) == 2 and len(ping(one.ns, two.address, count=2)) == 2


def test_host_moved_from_dual_stack_to_upstream_leaves_two_keys(lab, agent_path):
    """Pinned: what the flanneld role's refusal avoids."""
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="v010-moved") as cluster:
        mover_host, ours_host, upstream_host = lab.add_host(), lab.add_host(), lab.add_host()
        mover = cluster.agent(mover_host)
        subnet = _subnet(mover)
        observers = [cluster.agent(ours_host), cluster.agent(upstream_host, "-v=2", kind="upstream")]
        for agent in [mover] + observers:
            agent.wait_ready()
        dual_key = [key for key in _keys(cluster) if key.startswith("%s-20&" % subnet.ip)][0]
        mover.stop()
        moved = cluster.agent(mover_host, kind="upstream")
        moved.wait_ready()
        assert _subnet(moved) == subnet
        assert "Found lease (%s) for current IP (%s), reusing" % (subnet, mover_host.address) in moved.log
        assert sorted(key for key in _keys(cluster) if key.startswith("%s-20" % subnet.ip)) == [
            "%s-20" % subnet.ip, dual_key]  # v0.10 wrote its own key beside the dual-stack one
        new_mac = moved.state()["device"]["mac"]
        for observer in observers:  # both program the moved host's new VtepMAC (ours: its last key)
            wait_for(lambda: {"ip": str(subnet.ip), "mac": new_mac} in observer.state()["neighbours"],
                     what="%s observer programming the moved host" % observer.kind)
        # The dual-stack key expires (deleted here, as an expiry): upstream unroutes the subnet its
        # peer's plain key still holds; ours keeps it.
        cluster.raw.delete("/coreos.com/network/subnets/" + dual_key)
        wait_for(lambda: str(subnet) not in observers[1].routes(), what="upstream unrouting the moved host")
        assert str(subnet) in observers[0].routes()
        assert cluster.registry.get_lease(subnet) is not None
