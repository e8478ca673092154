"""The built agent on a dual-stack network (issue 24), on namespace hosts with a real etcd: its
lease key and value as modern flanneld writes them, subnet.env's IPv6 lines, both subnets kept
across a restart, a deleted lease and a switch from an IPv4-only config."""

import json

import pytest
from netaddr import IPNetwork

from support.cluster import Cluster, wait_for
from support.netns import ping

IPV4 = {"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0",
        "Backend": {"Type": "vxlan", "VNI": 100}}
DUAL = dict(IPV4, EnableIPv6=True, IPv6Network="fd00:10::/48")


def _own_lease(cluster, agent):
    leases = [lease for lease in cluster.registry.list_leases().leases
              if lease.attrs.public_ip == agent.host.address]
    return leases[0] if len(leases) == 1 else None


def _subnets(agent):
    env = agent.env()
    return IPNetwork(env["FLANNEL_SUBNET"]).cidr, IPNetwork(env["FLANNEL_IPV6_SUBNET"]).cidr


def test_dual_stack_lease_subnet_env_and_public_ipv6(lab, agent_path):
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="dual-stack") as cluster:
        hosts = [lab.add_host(), lab.add_host()]
        agents = [cluster.agent(hosts[0], "-public-ipv6=fd00:205::11"), cluster.agent(hosts[1])]
        for agent in agents:
            agent.wait_ready()
        for agent, public_ipv6 in zip(agents, ('"fd00:205::11"', "null")):
            subnet, ipv6_subnet = _subnets(agent)
            assert ipv6_subnet in IPNetwork("fd00:10::/48") and ipv6_subnet.prefixlen == 64
            assert agent.env() == {"FLANNEL_NETWORK": "10.0.0.0/8", "FLANNEL_SUBNET": "%s/20" % (subnet.ip + 1),
                                   "FLANNEL_IPV6_NETWORK": "fd00:10::/48",
                                   "FLANNEL_IPV6_SUBNET": "%s/64" % (ipv6_subnet.ip + 1),
                                   "FLANNEL_MTU": "1450", "FLANNEL_IPMASQ": "false"}
            with open(agent.subnet_file) as handle:  # modern flanneld's line order
                assert [line.split("=")[0] for line in handle.read().splitlines()] == [
                    "FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET",
                    "FLANNEL_MTU", "FLANNEL_IPMASQ"]
            mac = agent.state()["device"]["mac"]
            key = "/coreos.com/network/subnets/%s-20&%s-64" % (subnet.ip, ipv6_subnet.ip)
            assert cluster.raw.read(key).value == (
                '{"PublicIP":"%s","PublicIPv6":%s,"BackendType":"vxlan","BackendData":{"VNI":100,"VtepMAC":"%s"}}'
                % (agent.host.address, public_ipv6, mac))
            assert "IPv6 is carried inside flannel.100" in agent.log  # no IPv6 underlay here
        assert _subnets(agents[0])[1] != _subnets(agents[1])[1]
        # IPv4 between the hosts' overlay addresses is as before.
        wait_for(lambda: str(_subnets(agents[0])[0]) in agents[1].routes(), what="IPv4 route to the peer")
        assert len(ping(hosts[1].ns, str(_subnets(agents[0])[0].ip), count=2)) == 2


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_restart_and_a_deleted_lease_keep_both_subnets(lab, agent_path, api):
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="dual-keep-" + api, api=api) as cluster:
        host = lab.add_host()
        agent = cluster.agent(host)
        agent.wait_ready()
        subnets = _subnets(agent)
        agent.stop()
        cluster.raw.write("/coreos.com/network/subnets/10.50.0.0-20", "{}")  # junk beside it changes nothing
        again = cluster.agent(host)
        again.wait_ready()
        assert _subnets(again) == subnets and "found lease %s and %s for current IP" % subnets in again.log
        lease = _own_lease(cluster, again)
        assert cluster.registry.delete_lease(lease)
        wait_for(lambda: "re-acquiring a lease" in again.log and _own_lease(cluster, again) is not None,
                 what="the deleted lease re-acquired")
        regained = _own_lease(cluster, again)
        assert (regained.subnet, regained.ipv6_subnet) == subnets and regained.key == lease.key


def test_ipv6_turned_on_re_keys_the_lease_keeping_the_ipv4_subnet(lab, agent_path):
    with Cluster(lab, agent_path, config=json.dumps(IPV4), name="ipv6-on") as cluster:
        hosts = [lab.add_host(), lab.add_host()]
        agents = [cluster.agent(host) for host in hosts]
        for agent in agents:
            agent.wait_ready()
        before = [IPNetwork(agent.env()["FLANNEL_SUBNET"]).cidr for agent in agents]
        assert ["&" in _own_lease(cluster, agent).key for agent in agents] == [False, False]
        cluster.registry.put_config(json.dumps(DUAL))
        wait_for(lambda: all("FLANNEL_IPV6_SUBNET" in agent.env() for agent in agents), timeout=20,
                 what="both agents on the dual-stack config")
        for agent, subnet in zip(agents, before):
            lease = wait_for(lambda: _own_lease(cluster, agent), what="one lease of %s" % agent.host.name)
            assert (lease.subnet, lease.ipv6_subnet) == _subnets(agent) and lease.subnet == subnet
            assert lease.key == "%s-20&%s-64" % (subnet.ip, lease.ipv6_subnet.ip)
        for agent, peer in ((agents[0], before[1]), (agents[1], before[0])):
            wait_for(lambda: str(peer) in agent.routes(), what="%s routing %s again" % (agent.host.name, peer))
        cluster.registry.put_config(json.dumps(IPV4))
        wait_for(lambda: all("FLANNEL_IPV6_SUBNET" not in agent.env() for agent in agents), timeout=20,
                 what="both agents back on the IPv4-only config")
        assert [_own_lease(cluster, agent).key for agent in agents] == ["%s-20" % subnet.ip for subnet in before]


def test_a_later_key_naming_a_held_ipv6_subnet_is_skipped_and_its_host_acquires_again(lab, agent_path):
    """Two hosts acquiring at once can each create a key naming one IPv6 subnet (a create stops
    only a create at the same key). Written here as the later host would leave it: the others
    keep routing that subnet to the host whose key etcd created first, and the later host, when
    it starts, deletes its key, keeps its IPv4 subnet and takes another IPv6 subnet."""
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="dual-outheld") as cluster:
        hosts = [lab.add_host() for _number in range(3)]
        first, watcher = cluster.agent(hosts[0]), cluster.agent(hosts[1])
        for agent in (first, watcher):
            agent.wait_ready()
        ipv6_subnet = _subnets(first)[1]
        wait_for(lambda: str(ipv6_subnet) in watcher.routes(), what="the watcher routing %s" % ipv6_subnet)
        route = watcher.routes()[str(ipv6_subnet)]
        later_key = "/coreos.com/network/subnets/10.77.0.0-20&%s-64" % ipv6_subnet.ip
        cluster.raw.write(later_key, json.dumps({"PublicIP": hosts[2].address, "PublicIPv6": None,
                                                 "BackendType": "vxlan",
                                                 "BackendData": {"VNI": 100, "VtepMAC": "0e:00:00:00:00:77"}}),
                          ttl=600)
        for agent in (first, watcher):
            wait_for(lambda: "its IPv6Subnet %s" % ipv6_subnet in agent.log, what="%s skipping the later key (log:\n%s)"
                     % (agent.host.name, agent.log))
        assert watcher.routes()[str(ipv6_subnet)] == route and "10.77.0.0/20" not in watcher.routes()
        later = cluster.agent(hosts[2])
        later.wait_ready()
        assert _subnets(later)[0] == IPNetwork("10.77.0.0/20") and _subnets(later)[1] != ipv6_subnet
        assert "lease %s for current IP is not held" % later_key.rsplit("/", 1)[1] in later.log
        assert _own_lease(cluster, later).key == "10.77.0.0-20&%s-64" % _subnets(later)[1].ip
        for agent in (first, watcher):
            wait_for(lambda: {"10.77.0.0/20", str(_subnets(later)[1])} <= set(agent.routes()),
                     what="%s routing the later host's subnets" % agent.host.name)
        assert watcher.routes()[str(ipv6_subnet)] == route
        assert len(ping(hosts[2].ns, str(_subnets(first)[0].ip), count=2)) == 2
