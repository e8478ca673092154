"""The alloc backend (flanneld v0.10's): a lease and subnet.env, nothing programmed. Real agents,
ours and upstream's, on namespace hosts with a real etcd."""

import json

import pytest
from netaddr import IPNetwork

from support.cluster import Cluster, wait_for
from support.netns import ping
from test_config_change import BASE, VXLAN_100, _in_force, _links, _start

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import LeaseAttrs

ALLOC = json.dumps(dict(BASE, Backend={"Type": "alloc"}))


def _kernel(host):
    """Everything a backend could have programmed: links, routes, neighbours, FDB entries."""
    commands = (["ip", "-o", "link", "show"], ["ip", "route", "show", "table", "all"],
                ["ip", "neigh", "show", "nud", "permanent"], ["bridge", "fdb", "show"])
    return [host.run(argv).stdout for argv in commands]


@pytest.mark.control_plane  # no overlay traffic, no loss counted
@pytest.mark.parametrize("kind", ["ours", "upstream"])
def test_alloc_leases_and_writes_subnet_env_and_programs_nothing(lab, agent_path, kind, request):
    if kind == "upstream":
        request.getfixturevalue("upstream")
    with Cluster(lab, agent_path, config=ALLOC, name="alloc-" + kind) as cluster:
        host = lab.add_host()
        before = _kernel(host)
        agent = cluster.agent(host, kind=kind)
        subnet = IPNetwork(agent.wait_env()).cidr
        agent.wait_ready()
        assert cluster.lease_value(str(subnet)) == '{"PublicIP":"%s"}' % host.address
        assert agent.env() == {"FLANNEL_NETWORK": "10.0.0.0/8", "FLANNEL_SUBNET": "%s/20" % (subnet.network + 1),
                               "FLANNEL_MTU": "1500", "FLANNEL_IPMASQ": "false"}
        # Peers, of its own kind and of others: nothing is programmed for any of them.
        cluster.registry.create_lease(IPNetwork("10.20.0.0/20"), LeaseAttrs("172.31.250.50"), 600)
        cluster.registry.create_lease(IPNetwork("10.30.0.0/20"), LeaseAttrs("172.31.250.51", "vxlan",
                                                                            "0e:00:00:00:00:51"), 600)
        if kind == "ours":  # upstream's alloc does not even watch the leases
            wait_for(lambda: "2 peers" in agent.healthz()[1], what="both peers seen")
        assert _kernel(host) == before
        assert agent.process.poll() is None


def test_live_switch_vxlan_to_alloc_and_back(lab, cluster):
    """To alloc: flannel.100 and the peers' routes go, the lease loses its BackendType and data,
    subnet.env gets the interface's MTU; back to vxlan: all of it returns and containers ping."""
    hosts, agents, subnets = _start(lab, cluster)
    cluster.registry.put_config(ALLOC)
    _in_force(agents, json.loads(ALLOC))
    for host, agent, subnet, other in zip(hosts, agents, subnets, subnets[::-1]):
        assert "flannel.100" not in _links(host)
        assert str(other) not in host.run(["ip", "route", "show", "table", "all"]).stdout
        assert cluster.lease_json(str(subnet)) == '{"PublicIP":"%s"}' % host.address
        assert agent.env()["FLANNEL_MTU"] == "1500" and IPNetwork(agent.env()["FLANNEL_SUBNET"]).cidr == subnet

    cluster.registry.put_config(json.dumps(VXLAN_100))
    _in_force(agents, VXLAN_100)
    for agent, other in zip(agents, subnets[::-1]):
        wait_for(lambda: agent.routes().get(str(other), {}).get("onlink"), what="vxlan routes again")
        assert agent.env()["FLANNEL_MTU"] == "1450"
    one, two = [lab.add_container(host, "%s/20" % (subnet.network + 1)) for host, subnet in zip(hosts, subnets)]
    assert len(ping(one.ns, two.address, count=2)) == 2 and len(ping(two.ns, one.address, count=2)) == 2
