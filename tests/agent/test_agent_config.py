"""The built agent reading network configs written by others: unknown keys are warned about and
ignored (interop with other tools), a bad value is refused naming the key and the rule."""

import pytest
from netaddr import IPNetwork

from support.cluster import Cluster, wait_for

# No overlay traffic, no loss counted: make test runs this file before Molecule ends (agent-control).
pytestmark = pytest.mark.control_plane


def test_unknown_keys_are_warned_about_and_the_lease_taken(lab, agent_path):
    config = ('{"Network": "10.0.0.0/8", "SubnetLen": 20, "EnableNFTables": false, '
              '"Backend": {"Type": "vxlan", "VNI": 100, "VNl": 5}}')
    with Cluster(lab, agent_path, config=config, name="unknown-keys") as cluster:
        agent = cluster.agent(lab.add_host())
        assert IPNetwork(agent.wait_env()).prefixlen == 20
        log = agent.log
        assert ("network config at /coreos.com/network/config: EnableNFTables: unknown key (known keys: Network, "
                "SubnetLen, SubnetMin, SubnetMax, Backend, EnableIPv4, EnableIPv6, IPv6Network, IPv6SubnetLen, "
                "IPv6SubnetMin, IPv6SubnetMax), ignored") in log
        assert 'Backend.VNl: unknown key (did you mean "VNI"?' in log
        assert log.count("EnableNFTables: unknown key") == 1
        assert "Traceback" not in log
        wait_for(lambda: agent.healthz()[0] == 200, what="healthy")


def test_network_with_host_bits_is_refused_until_fixed(lab, agent_path):
    config = '{"Network": "10.1.2.3/8", "Backend": {"Type": "vxlan", "VNI": 100}}'
    with Cluster(lab, agent_path, config=config, name="host-bits") as cluster:
        agent = cluster.agent(lab.add_host())
        rule = "Network: 10.1.2.3/8 has host bits set: must be a network address, such as 10.0.0.0/8"
        wait_for(lambda: rule in agent.log, what="rejection logged")
        status, body = wait_for(lambda: agent.healthz()[0] and agent.healthz(), what="healthz answering")
        assert status == 503 and rule in body
        assert "Traceback" not in agent.log
        cluster.registry.put_config('{"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "VNI": 100}}')
        assert IPNetwork(agent.wait_env()).prefixlen == 24
        assert agent.process.poll() is None
