"""The alloc backend (flanneld v0.10's): a lease and subnet.env, nothing programmed. Real agents,
ours and upstream's, on namespace hosts with a real etcd."""

import json

import pytest
from netaddr import IPNetwork

from support.cluster import Cluster, wait_for

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import LeaseAttrs

ALLOC = json.dumps({"Network": "10.0.0.0/8", "SubnetLen": 20, "Backend": {"Type": "alloc"}})


def _kernel(host):
    """Everything a backend could have programmed: links, routes, neighbours, FDB entries."""
    commands = (["ip", "-o", "link", "show"], ["ip", "route", "show", "table", "all"],
                ["ip", "neigh", "show", "nud", "permanent"], ["bridge", "fdb", "show"])
    return [host.run(argv).stdout for argv in commands]


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
