"""The dual-stack data plane (issue 24) on namespace hosts with a real etcd and real VXLAN devices:
IPv6 between containers' stand-in namespaces inside the IPv4 flannel.<VNI> (no IPv6 underlay) and
over flannel-v6.<VNI> (an IPv6 underlay), host-gw's IPv6 routes, a deleted IPv6 entry repaired, the
ip6tables masquerade rules, and a lease in modern flanneld's exact format. Every ping runs inside
a test namespace."""

import json

from netaddr import IPNetwork

from support.cluster import Cluster, wait_for
from support.netns import ping

DUAL = {"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0",
        "EnableIPv6": True, "IPv6Network": "fd00:10::/48", "Backend": {"Type": "vxlan", "VNI": 100}}
HOST_GW = dict(DUAL, Backend={"Type": "host-gw"})
UNDERLAY6 = "fd00:205::%d"  # the LAN's IPv6 prefix, when a test gives the hosts one


def _dual_host(lab, underlay6=False):
    """A lab host forwarding IPv6 too; with `underlay6`, eth0 also has fd00:205::<n>/64."""
    host = lab.add_host()
    host.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
    if underlay6:
        host.address6 = UNDERLAY6 % (10 + len(lab.hosts))
        host.run(["ip", "-6", "addr", "add", host.address6 + "/64", "dev", "eth0", "nodad"])
    return host


def _container(lab, host, env):
    """A container stand-in behind `host` on its leased subnets, its link at FLANNEL_MTU as
    Docker's would be. Returns (namespace, IPv4 address, IPv6 address)."""
    container = lab.add_container(host, env["FLANNEL_SUBNET"], env["FLANNEL_IPV6_SUBNET"], env["FLANNEL_MTU"])
    return container.ns, container.address, container.address6


def _routes6(host):
    return host.run(["ip", "-6", "route", "show", "proto", "static"]).stdout


def _two_dual_stack_hosts(lab, cluster, underlay6, flags=()):
    hosts = [_dual_host(lab, underlay6[0]), _dual_host(lab, underlay6[1])]
    agents = [cluster.agent(host, *flags) for host in hosts]
    for agent in agents:
        agent.wait_ready()
    envs = [agent.env() for agent in agents]
    for host, peer_env in ((hosts[0], envs[1]), (hosts[1], envs[0])):
        peer6 = str(IPNetwork(peer_env["FLANNEL_IPV6_SUBNET"]).cidr)
        wait_for(lambda: peer6 in _routes6(host), what="%s routing %s" % (host.name, peer6))
    return hosts, agents, envs


def _pings_both_ways(lab, hosts, envs):
    """ping and ping -6 between the two containers, both ways, and a don't-fragment ping of
    FLANNEL_MTU bytes per family."""
    containers = [_container(lab, host, env) for host, env in zip(hosts, envs)]
    mtu = int(envs[0]["FLANNEL_MTU"])
    # The first IPv6 echo of a fresh pair of stand-ins can take over 2 s (their link-local
    # addresses are still in DAD when neighbour discovery starts): one unasserted echo first.
    for source, target in ((containers[0], containers[1]), (containers[1], containers[0])):
        ping(source[0], target[2], count=1, timeout=5)
    for source, target in ((containers[0], containers[1]), (containers[1], containers[0])):
        for address in target[1:]:
            assert len(ping(source[0], address, count=2)) == 2, "no echo from %s" % address
            assert len(ping(source[0], address, count=2, size=mtu)) == 2, "no %d-byte DF echo from %s" % (
                mtu, address)
    return containers


def test_ipv6_inside_the_ipv4_vxlan_device(lab, agent_path):
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="ipv6-inside-v4") as cluster:
        hosts, agents, envs = _two_dual_stack_hosts(lab, cluster, (False, False))
        assert [env["FLANNEL_MTU"] for env in envs] == ["1450", "1450"]
        peer6 = IPNetwork(envs[1]["FLANNEL_IPV6_SUBNET"]).cidr
        state = agents[0].state()
        peer_mac = agents[1].state()["device"]["mac"]
        route = [line for line in _routes6(hosts[0]).splitlines() if line.startswith(str(peer6))]
        assert route and "via %s dev flannel.100" % peer6.ip in route[0] and "onlink" in route[0]
        neighbours = hosts[0].run(["ip", "-6", "neigh", "show", "dev", "flannel.100", "nud", "permanent"]).stdout
        assert "%s lladdr %s PERMANENT" % (peer6.ip, peer_mac) in neighbours
        own6 = IPNetwork(envs[0]["FLANNEL_IPV6_SUBNET"]).cidr
        assert "%s/128" % own6.ip in hosts[0].run(["ip", "-6", "addr", "show", "dev", "flannel.100"]).stdout
        assert not any(fdb for fdb in state["fdb"] if ":" in fdb["dst"])  # the IPv4 FDB entry is shared
        lease = json.loads(cluster.raw.read("/coreos.com/network/subnets/%s-20&%s-64" % (
            IPNetwork(envs[0]["FLANNEL_SUBNET"]).network, own6.ip)).value)
        assert lease["PublicIPv6"] is None and "BackendV6Data" not in lease
        assert "carried inside flannel.100" in agents[0].log
        _pings_both_ways(lab, hosts, envs)


def test_a_deleted_ipv6_route_neighbour_and_address_are_repaired(lab, agent_path):
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="ipv6-repairs") as cluster:
        hosts, agents, envs = _two_dual_stack_hosts(lab, cluster, (False, False))
        peer6 = IPNetwork(envs[1]["FLANNEL_IPV6_SUBNET"]).cidr
        own6 = IPNetwork(envs[0]["FLANNEL_IPV6_SUBNET"]).cidr
        hosts[0].run(["ip", "-6", "route", "del", str(peer6)])
        wait_for(lambda: "restored route %s" % peer6 in agents[0].log, what="the IPv6 route restored")
        assert str(peer6) in _routes6(hosts[0])
        hosts[0].run(["ip", "-6", "neigh", "del", str(peer6.ip), "dev", "flannel.100"])
        wait_for(lambda: "restored neighbour %s" % peer6.ip in agents[0].log, what="the IPv6 neighbour restored")
        hosts[0].run(["ip", "-6", "addr", "del", "%s/128" % own6.ip, "dev", "flannel.100"])
        wait_for(lambda: "%s/128" % own6.ip in hosts[0].run(["ip", "-6", "addr", "show", "dev", "flannel.100"]).stdout,
                 what="the device's IPv6 address back")
        _pings_both_ways(lab, hosts, envs)
        # The peer gone (stopped, its lease deleted): its IPv6 route and neighbour go with its IPv4 ones.
        agents[1].stop()
        peer = [lease for lease in cluster.registry.list_leases().leases if lease.attrs.public_ip == hosts[1].address]
        assert cluster.registry.delete_lease(peer[0])
        # One request removes the peer's entries, but another reader may see them go one by one.
        wait_for(lambda: str(peer6) not in _routes6(hosts[0]) and agents[0].routes() == {} and str(peer6.ip) not in
                 hosts[0].run(["ip", "-6", "neigh", "show", "dev", "flannel.100"]).stdout,
                 what="the peer's IPv4 and IPv6 routes and its IPv6 neighbour removed")


def test_ipv6_over_an_ipv6_underlay_uses_flannel_v6(lab, agent_path):
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="ipv6-underlay") as cluster:
        hosts, agents, envs = _two_dual_stack_hosts(lab, cluster, (True, True))
        assert [env["FLANNEL_MTU"] for env in envs] == ["1430", "1430"]  # flannel-v6's: 70 bytes of headers
        peer6 = IPNetwork(envs[1]["FLANNEL_IPV6_SUBNET"]).cidr
        assert "via %s dev flannel-v6.100" % peer6.ip in _routes6(hosts[0])
        device6 = agents[0].state("flannel-v6.100")["device"]
        assert device6["local"] == hosts[0].address6 and device6["mtu"] == 1430
        fdb = agents[0].state("flannel-v6.100")["fdb"]
        peer_mac6 = agents[1].state("flannel-v6.100")["device"]["mac"]
        assert {"mac": peer_mac6, "dst": hosts[1].address6} in fdb
        own = IPNetwork(envs[0]["FLANNEL_SUBNET"]).cidr
        own6 = IPNetwork(envs[0]["FLANNEL_IPV6_SUBNET"]).cidr
        value = cluster.raw.read("/coreos.com/network/subnets/%s-20&%s-64" % (own.ip, own6.ip)).value
        assert value == ('{"PublicIP":"%s","PublicIPv6":"%s","BackendType":"vxlan","BackendData":{"VNI":100,'
                         '"VtepMAC":"%s"},"BackendV6Data":{"VNI":100,"VtepMAC":"%s"}}'
                         % (hosts[0].address, hosts[0].address6, agents[0].state()["device"]["mac"],
                            device6["mac"]))
        _pings_both_ways(lab, hosts, envs)


def test_a_host_without_ipv6_underlay_and_one_with_reach_each_other(lab, agent_path):
    """The rule: flannel-v6 only when both ends have it; else inside flannel.<VNI>, both ways."""
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="ipv6-mixed-underlay") as cluster:
        hosts, agents, envs = _two_dual_stack_hosts(lab, cluster, (True, False))
        peer6 = IPNetwork(envs[1]["FLANNEL_IPV6_SUBNET"]).cidr
        assert "via %s dev flannel.100" % peer6.ip in _routes6(hosts[0])
        envs[1]["FLANNEL_MTU"] = envs[0]["FLANNEL_MTU"] = "1430"  # the smaller of the two hosts'
        _pings_both_ways(lab, hosts, envs)


def test_host_gw_routes_ipv6_via_the_peers_public_ipv6(lab, agent_path):
    with Cluster(lab, agent_path, config=json.dumps(HOST_GW), name="ipv6-host-gw") as cluster:
        hosts, agents, envs = _two_dual_stack_hosts(lab, cluster, (True, True))
        peer6 = IPNetwork(envs[1]["FLANNEL_IPV6_SUBNET"]).cidr
        assert "%s via %s dev eth0" % (peer6, hosts[1].address6) in _routes6(hosts[0])
        _pings_both_ways(lab, hosts, envs)
        # A host with no IPv6 on its interface cannot be routed to: the agent says so and does not start.
        lonely = cluster.agent(_dual_host(lab))
        wait_for(lambda: "needs a global IPv6 address on eth0" in lonely.log, what="host-gw refusing without IPv6")
        assert lonely.healthz()[0] != 200


def test_ip_masq_adds_ip6tables_rules(lab, agent_path):
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="ipv6-masq") as cluster:
        host = _dual_host(lab)
        agent = cluster.agent(host, "-ip-masq")
        agent.wait_ready()
        subnet6 = IPNetwork(agent.env()["FLANNEL_IPV6_SUBNET"]).cidr
        rules = [line for line in host.run(["ip6tables", "-w", "-t", "nat", "-S", "POSTROUTING"]).stdout.splitlines()
                 if "flanneld masq" in line]
        assert rules == [
            '-A POSTROUTING -s fd00:10::/48 -d fd00:10::/48 -m comment --comment "flanneld masq" -j RETURN',
            '-A POSTROUTING -s fd00:10::/48 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE',
            '-A POSTROUTING ! -s fd00:10::/48 -d %s -m comment --comment "flanneld masq" -j RETURN' % subnet6,
            '-A POSTROUTING ! -s fd00:10::/48 -d fd00:10::/48 -m comment --comment "flanneld masq" -j MASQUERADE']


def test_a_lease_in_modern_flannels_format_is_programmed(lab, agent_path):
    """A dual-stack lease exactly as flanneld v0.15+ writes it (key and value), from a host this
    one reaches over IPv4 only: both its subnets are routed through flannel.100."""
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="ipv6-modern-lease") as cluster:
        host = _dual_host(lab)
        agent = cluster.agent(host)
        agent.wait_ready()
        cluster.raw.write("/coreos.com/network/subnets/10.10.240.0-20&fd00:10:0:f0::-64",
                          '{"PublicIP":"172.31.250.99","PublicIPv6":"fd00:205::99","BackendType":"vxlan",'
                          '"BackendData":{"VNI":100,"VtepMAC":"6e:c2:9a:3b:6e:0d"},'
                          '"BackendV6Data":{"VNI":100,"VtepMAC":"8a:4f:f9:0e:1c:77"}}', ttl=600)
        wait_for(lambda: "fd00:10:0:f0::/64" in _routes6(host), what="the modern lease's IPv6 subnet routed")
        assert "fd00:10:0:f0::/64 via fd00:10:0:f0:: dev flannel.100" in _routes6(host)
        assert "10.10.240.0/20" in agent.routes()
        neighbours = host.run(["ip", "-6", "neigh", "show", "dev", "flannel.100"]).stdout
        assert "fd00:10:0:f0:: lladdr 6e:c2:9a:3b:6e:0d PERMANENT" in neighbours


def test_hostile_ipv6_lease_data_is_skipped(lab, agent_path):
    """Leases whose IPv6 side breaks a rule, written while two IPv6-underlay hosts run: each is
    skipped (logged once), the pair's IPv6 entries stay as they were and IPv6 pings go on."""
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="ipv6-hostile") as cluster:
        hosts, agents, envs = _two_dual_stack_hosts(lab, cluster, (True, True))
        mac6 = [agent.state("flannel-v6.100")["device"]["mac"] for agent in agents]
        before = [_routes6(host) for host in hosts]
        mac = "0e:00:00:00:00:%02x"
        hostile = {  # key -> value
            # another host's IPv6 VtepMAC (host 2's): its flannel-v6 FDB entry would move here
            "10.40.0.0-20&fd00:10:0:40::-64": '{"PublicIP":"172.31.250.90","PublicIPv6":"fd00:205::90",'
            '"BackendType":"vxlan","BackendData":{"VNI":100,"VtepMAC":"%s"},"BackendV6Data":{"VNI":100,"VtepMAC":"%s"}}'
            % (mac % 0x40, mac6[1]),
            # host 1's own IPv6 VtepMAC
            "10.41.0.0-20&fd00:10:0:41::-64": '{"PublicIP":"172.31.250.91","PublicIPv6":"fd00:205::91",'
            '"BackendType":"vxlan","BackendData":{"VNI":100,"VtepMAC":"%s"},"BackendV6Data":{"VNI":100,"VtepMAC":"%s"}}'
            % (mac % 0x41, mac6[0]),
            # an IPv6 subnet outside the IPv6Network
            "10.42.0.0-20&fd00:99:0:42::-64": '{"PublicIP":"172.31.250.92","PublicIPv6":"fd00:205::92",'
            '"BackendType":"vxlan","BackendData":{"VNI":100,"VtepMAC":"%s"}}' % (mac % 0x42),
            # a PublicIPv6 inside the overlay
            "10.43.0.0-20&fd00:10:0:43::-64": '{"PublicIP":"172.31.250.93","PublicIPv6":"fd00:10:0:1::1",'
            '"BackendType":"vxlan","BackendData":{"VNI":100,"VtepMAC":"%s"}}' % (mac % 0x43),
        }
        for key, value in hostile.items():
            cluster.raw.write("/coreos.com/network/subnets/" + key, value, ttl=600)
        for agent in agents:
            wait_for(lambda: all(key in agent.log for key in hostile), what="%s skipping all %d" % (
                agent.host.name, len(hostile)))
        assert "skipping lease 10.40.0.0-20&fd00:10:0:40::-64: its VtepMAC %s is held by lease" % mac6[1] \
            in agents[0].log
        assert "skipping lease 10.41.0.0-20&fd00:10:0:41::-64: its VtepMAC %s is this host's own" % mac6[0] \
            in agents[0].log
        for host, routes in zip(hosts, before):
            assert _routes6(host) == routes
        for agent, peer in ((agents[0], hosts[1]), (agents[1], hosts[0])):
            fdb = agent.state("flannel-v6.100")["fdb"]
            assert [entry["dst"] for entry in fdb] == [peer.address6]
            assert agent.healthz()[0] == 200
        _pings_both_ways(lab, hosts, envs)


def _ipv6_state(host):
    """What IPv6 state of the overlay a host holds: {what: its listing}, empty when none."""
    found = {"routes": _routes6(host), "flannel-v6": "flannel-v6" in host.run(["ip", "link", "show"]).stdout,
             "neighbours": host.run(["ip", "-6", "neigh", "show", "dev", "flannel.100", "nud", "permanent"]).stdout,
             "addresses": "fd00:10:" in host.run(["ip", "-6", "addr", "show", "dev", "flannel.100"]).stdout,
             "masq": "flanneld masq" in host.run(["ip6tables", "-w", "-t", "nat", "-S", "POSTROUTING"]).stdout}
    return dict((what, listing) for what, listing in found.items() if listing)


def test_ipv6_turned_off_leaves_no_ipv6_state(lab, agent_path):
    """EnableIPv6 turned off while the agents run (with -ip-masq): flannel-v6 goes, and so do the
    IPv6 routes, neighbours, device addresses and ip6tables rules; IPv4 goes on."""
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="ipv6-off") as cluster:
        hosts, agents, envs = _two_dual_stack_hosts(lab, cluster, (True, False), flags=("-ip-masq",))
        # hosts[0] carries its own IPv6 address on flannel-v6.100, hosts[1] on flannel.100.
        assert set(_ipv6_state(hosts[0])) == {"routes", "flannel-v6", "neighbours", "masq"}
        assert set(_ipv6_state(hosts[1])) == {"routes", "neighbours", "addresses", "masq"}
        ipv4_only = dict(DUAL)
        for key in ("EnableIPv6", "IPv6Network"):
            del ipv4_only[key]
        cluster.registry.put_config(json.dumps(ipv4_only))
        wait_for(lambda: all("FLANNEL_IPV6_SUBNET" not in agent.env() for agent in agents), timeout=20,
                 what="both agents on the IPv4-only config")
        # subnet.env is written mid-switch, before the old backend's teardown: wait for the end state.
        for host, agent in zip(hosts, agents):
            wait_for(lambda: _ipv6_state(host) == {} and agent.healthz()[0] == 200, timeout=20,
                     what="%s without IPv6 state, healthy" % host.name)
        subnets = [IPNetwork(agent.env()["FLANNEL_SUBNET"]) for agent in agents]
        containers = [lab.add_container(host, str(subnet)) for host, subnet in zip(hosts, subnets)]
        wait_for(lambda: str(subnets[1].cidr) in agents[0].routes(), what="IPv4 route to the peer")
        assert len(ping(containers[0].ns, containers[1].address, count=2)) == 2


def test_ipv6_off_by_default_on_the_host_is_turned_on_for_the_agents_device(lab, agent_path):
    """A host made without IPv6 (net.ipv6.conf.all/default.disable_ipv6=1, as Docker starts a
    container on a network without IPv6): the agent turns IPv6 on for flannel.100 alone."""
    with Cluster(lab, agent_path, config=json.dumps(DUAL), name="ipv6-disabled-host") as cluster:
        hosts = [_dual_host(lab), _dual_host(lab)]
        hosts[0].run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        hosts[0].run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        agents = [cluster.agent(host) for host in hosts]
        for agent in agents:
            agent.wait_ready()
        assert "set flannel.100 ipv6 on (disable_ipv6 was 1)" in agents[0].log
        assert "ipv6 on" not in agents[1].log
        envs = [agent.env() for agent in agents]
        for host, peer_env in ((hosts[0], envs[1]), (hosts[1], envs[0])):
            peer6 = str(IPNetwork(peer_env["FLANNEL_IPV6_SUBNET"]).cidr)
            wait_for(lambda: peer6 in _routes6(host), what="%s routing %s" % (host.name, peer6))
        _pings_both_ways(lab, hosts, envs)
