"""A changed network config applied through the collection on the lab (under its lock): site.yml
with host-gw moves both hosts without restarting an agent (docker restarted on the new MTU, the
same subnets), a second run changes nothing, verify.yml passes; verify.yml names a host whose agent
is not running the stored config; site.yml brings the lab back to the inventory's vxlan config
(MTU 1450, flannel.100, the same subnets, verify.yml green): the dual-stack case's first run, which
starts where this case ends (labtools.hand_over), or back_to_the_inventory_config when it does not
follow.
Between host-gw and that check, flanneld v0.10's backends without a data plane of the agent's own:
alloc (verify.yml says it pings nothing, the picture labels the hosts as leases only) and extension
with plain routes through the peers as its commands (verify.yml's pings pass through them; the
lease carries the PreStartupCommand's output).
(The Molecule default scenario no longer repeats this switch: this is the lab's one test of it.)
Dual-stack (issue 24), over the lab network's IPv6 prefix: site.yml with the inventory's vxlan
config plus EnableIPv6 runs flannel-v6.100 and gives docker an IPv6 subnet (daemon.json ipv6 and
fixed-cidr-v6, FLANNEL_MTU 1430), verify.yml pings over both families, and a don't-fragment ping of
1430 bytes passes each way for each family; teardown.yml then leaves no IPv6 state; site.yml with
host-gw plus EnableIPv6 routes IPv6 via each peer's IPv6 address (verify.yml); site.yml with the
IPv4-only inventory config then turns IPv6 off under the running containers (no IPv6 state left,
the containers keep their IPv4 addresses)."""

import json
import os

from support.labtools import (NODES, NODES6, PLAYBOOKS, ROOT, ansible_playbook, docker_exec, ensure_lab, hand_over,
                              lab_inventories, lab_snapshot, own_agent_installed)
from test_upstream_agent import changed_counts, run_ok, subnets

SITE = os.path.join(ROOT, "playbooks", "site.yml")
TEARDOWN = os.path.join(ROOT, "playbooks", "teardown.yml")
VERIFY = os.path.join(ROOT, "playbooks", "verify.yml")
ROLE = os.path.join(PLAYBOOKS, "role.yml")
HOST_GW = {"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0",
           "Backend": {"Type": "host-gw"}}
ALLOC = dict(HOST_GW, Backend={"Type": "alloc"})
# The recipe of tests/agent/test_extension_backend.py, on the lab's eth0: the lease's BackendData
# is the node's name; each peer gets a route via its PublicIP.
EXTENSION = dict(HOST_GW, Backend={
    "Type": "extension",
    "PreStartupCommand": "hostname",
    "SubnetAddCommand": "sh -c 'ip route replace $SUBNET via $PUBLIC_IP dev eth0'",
    "SubnetRemoveCommand": "sh -c 'ip route del $SUBNET via $PUBLIC_IP dev eth0'"})
# The inventory's vxlan config (inventories/lab/group_vars/flannel.yml) on a dual-stack network:
# the lab network's IPv6 prefix is the underlay, so IPv6 rides in flannel-v6.100; and host-gw's.
DUAL_STACK = dict(HOST_GW, Backend={"Type": "vxlan", "VNI": 100, "Port": 8472}, EnableIPv6=True,
                  IPv6Network="fd00:10::/48")
DUAL_STACK_HOST_GW = dict(DUAL_STACK, Backend={"Type": "host-gw"})
NODE_OF = dict((address, node) for node, address in NODES.items())
CONTAINER_IPV4 = "docker inspect -f '{{.NetworkSettings.IPAddress}}' test%s"
# A node's IPv6 state: subnet.env's IPv6 lines, daemon.json's IPv6 keys and MTU, the test
# container's IPv6 address, flannel-v6, docker0's IPv6 address, the routes into the IPv6 network
# (the backend's and docker0's), the agent's ip6tables rules.
IPV6_STATE = r"""
grep IPV6 /run/flannel/subnet.env 2>/dev/null
python3 -c 'import json; d = json.load(open("/etc/docker/daemon.json"))
print("docker ipv6=%s fixed-cidr-v6=%s mtu=%s" % (d.get("ipv6"), d.get("fixed-cidr-v6"), d.get("mtu")))'
echo "container6=$(docker inspect -f '{{.NetworkSettings.GlobalIPv6Address}}' test${HOSTNAME##*node} 2>/dev/null)"
ip -o link show | grep -o 'flannel-v6[.0-9]*' | sort -u
ip -6 -o addr show dev docker0 scope global
ip -6 route show | grep '^fd00:10:'
ip6tables -w -t nat -S POSTROUTING | grep 'flanneld masq'
true
"""
PICTURE = os.path.join(ROOT, "build", "overlay.svg")
# The host-gw case's end, handed over to the dual-stack case (labtools.hand_over).
LEFT_WITH_AN_AGENT_STOPPED = "the inventory's vxlan config stored, the second node's agent stopped, Docker on MTU 1500"
HOST_STATE = r"""
echo "pid=$(systemctl show -p MainPID --value flanneld)"
grep FLANNEL_MTU /run/flannel/subnet.env
python3 -c 'import json; print("docker mtu=%s" % json.load(open("/etc/docker/daemon.json")).get("mtu"))'
ip -o link show | grep -o 'flannel[.0-9]*' | sort -u | tr '\n' ' '; echo
"""


def host_states():
    return dict((node, docker_exec(node, HOST_STATE)) for node in NODES)


def peer_routes(node):
    """host-gw's routes on node: into the overlay (10/8) via another node's lab address."""
    peers = set(address for name, address in NODES.items() if name != node)
    routes = json.loads(docker_exec(node, "ip -j -4 route show"))
    return [route for route in routes if route.get("gateway") in peers and route["dst"].startswith("10.")]


def picture():
    with open(PICTURE) as handle:
        return handle.read().replace("&#45;", "-").replace("&#39;", "'")  # dot writes entities


def check_alloc_then_extension():
    """site.yml to alloc, verify.yml; then to extension, verify.yml (the lab runs host-gw before)."""
    output = run_ok(SITE, {"network_config_flannel": ALLOC})
    for node, state in host_states().items():
        assert "FLANNEL_MTU=1500\n" in state and "flannel" not in state.split("\n")[-2], "%s: %s" % (node, state)
        assert peer_routes(node) == [], "%s: routes left after host-gw: %s" % (node, peer_routes(node))
    output = run_ok(VERIFY)
    assert "the network config's backend is alloc (leases only, no data plane), so nothing is pinged" in output
    assert "0 host(s) disagreeing" in output, output[-3000:]
    svg = picture()
    assert "backend alloc (leases only, no data plane)" in svg and "DISAGREES" not in svg
    assert svg.count("no device of its own (alloc: leases only, no data plane)") == len(NODES)
    assert svg.count("not programmed (alloc)") == len(NODES) * (len(NODES) - 1)

    run_ok(SITE, {"network_config_flannel": EXTENSION})
    leases = dict((json.loads(value)["PublicIP"], json.loads(value)) for key, value in lab_snapshot()["etcd"].items()
                  if "/subnets/" in key)
    for node, address in NODES.items():
        assert leases[address].get("BackendType") == "extension" and leases[address].get("BackendData") == node, \
            leases[address]
        routes = peer_routes(node)  # the add commands' routes
        assert len(routes) == len(NODES) - 1 and set(route["dev"] for route in routes) == {"eth0"}, (node, routes)
    output = run_ok(VERIFY)  # the test containers ping each other through the commands' routes
    assert "0 host(s) disagreeing" in output, output[-3000:]
    svg = picture()
    assert "backend extension (the user's commands)" in svg and "DISAGREES" not in svg
    assert svg.count("no device of its own (extension: the data plane is its commands')") == len(NODES)
    for node in NODES:
        assert "BackendData " + node in svg


def test_site_yml_moves_the_lab_to_host_gw_and_back_without_restarting_agents(lab):
    with lab():
        ensure_lab()
        # This checkout's agent in place first: the switch below must not restart it. The lab
        # make test hands over (Molecule's default scenario, then cases that each end with
        # site.yml) has it already: site.yml only when another checkout's run left the lab.
        if not own_agent_installed():
            run_ok(SITE)
        before, states = subnets(lab_snapshot()), host_states()
        handed_over = False
        try:
            run_ok(SITE, {"network_config_flannel": HOST_GW})
            for node, state in host_states().items():
                assert state.split("\n")[0] == states[node].split("\n")[0], "%s: agent restarted: %s" % (node, state)
                assert "FLANNEL_MTU=1500\ndocker mtu=1500\n" in state and "flannel.100" not in state, \
                    "%s: %s" % (node, state)
            for node in NODES:
                routes = peer_routes(node)
                assert len(routes) == len(NODES) - 1 and set(route["dev"] for route in routes) == {"eth0"}, \
                    "%s: host-gw routes via the peers: %s" % (node, routes)
            assert subnets(lab_snapshot()) == before
            again = changed_counts(run_ok(SITE, {"network_config_flannel": HOST_GW}))
            assert set(again) == set(NODES) and set(again.values()) == {0}, "second run changed: %s" % again
            run_ok(VERIFY)
            check_alloc_then_extension()

            # An agent that is not running the stored config: verify names its host.
            first, second = sorted(NODES)
            docker_exec(second, "systemctl stop flanneld")
            run_ok(ROLE, {"integration_role": "network_config", "integration_hosts": first})
            rc, output = ansible_playbook([VERIFY], inventories=lab_inventories())
            assert rc != 0 and "%s: the stored network config (vxlan, " % second in output, output[-3000:]
            assert "%s: the stored network config" % first not in output, output[-3000:]
            # site.yml's return to the inventory's config from here is the dual-stack case's first
            # run (it starts from this state and checks what the return gives); run alone, or
            # followed by another case, back_to_the_inventory_config makes and checks it.
            hand_over(LEFT_WITH_AN_AGENT_STOPPED, lambda: back_to_the_inventory_config(before))
            handed_over = True
        finally:
            if not handed_over:
                run_ok(SITE)  # back to the inventory's config when a check failed: the lab is shared


def back_to_the_inventory_config(before):
    """site.yml brings the inventory's vxlan config back: MTU 1450, flannel.100, the same subnets,
    verify.yml green."""
    run_ok(SITE)
    for node, state in host_states().items():
        assert "FLANNEL_MTU=1450\ndocker mtu=1450\n" in state and "flannel.100" in state, "%s: %s" % (node, state)
    assert subnets(lab_snapshot()) == before
    run_ok(VERIFY)


def ipv6_routes_via_peers(node):
    """host-gw's IPv6 routes on node: into the IPv6 network via another node's lab IPv6 address."""
    peers = set(address for name, address in NODES6.items() if name != node)
    routes = json.loads(docker_exec(node, "ip -j -6 route show"))
    return [route for route in routes if route.get("gateway") in peers and route["dst"].startswith("fd00:10:")]


def check_dual_stack_state(backend_device, mtu):
    """Each node's IPv6 state on the dual-stack config; returns {node: its test container's IPv6 address}."""
    containers6 = {}
    for node in NODES:
        state = docker_exec(node, IPV6_STATE)
        subnet6 = [line.split("=")[1] for line in state.split("\n") if line.startswith("FLANNEL_IPV6_SUBNET=")]
        assert "FLANNEL_IPV6_NETWORK=fd00:10::/48\n" in state and len(subnet6) == 1, "%s: %s" % (node, state)
        assert "docker ipv6=True fixed-cidr-v6=%s mtu=%d\n" % (subnet6[0], mtu) in state, "%s: %s" % (node, state)
        assert "container6=fd00:10:" in state and "dev %s" % backend_device in state, "%s: %s" % (node, state)
        assert state.count("flanneld masq") == 4, "%s: %s" % (node, state)
        containers6[node] = state.split("container6=")[1].split("\n")[0]
    for key, value in lab_snapshot()["etcd"].items():  # each lease publishes its node's lab IPv6 address
        if "/subnets/" in key:
            lease = json.loads(value)
            assert lease.get("PublicIPv6") == NODES6[NODE_OF[lease["PublicIP"]]], (key, lease)
    return containers6


# A don't-fragment echo request (ping -M do, which the nodes' busybox lacks): argv family, target,
# packet size; prints "reply" or fails (EMSGSIZE when the packet is over the path's MTU, a timeout
# when it is lost). ICMPv6's checksum is the kernel's; ICMP's is computed here.
DF_PING = r"""
import os, socket, struct, sys
family, target, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if family == 6:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sock.setsockopt(socket.IPPROTO_IPV6, 23, 2)  # IPV6_MTU_DISCOVER = IPV6_PMTUDISC_DO
    request, reply, payload = 128, 129, size - 40 - 8
else:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
    request, reply, payload = 8, 0, size - 20 - 8
ident = os.getpid() & 0xFFFF
body = struct.pack("!HH", ident, 1) + b"d" * payload
padded = struct.pack("!BBH", request, 0, 0) + body + b"\0" * (len(body) % 2)
total = sum(struct.unpack("!%dH" % (len(padded) // 2), padded))
while total >> 16:
    total = (total & 0xFFFF) + (total >> 16)
sock.sendto(struct.pack("!BBH", request, 0, 0 if family == 6 else ~total & 0xFFFF) + body, (target, 0))
sock.settimeout(3)
while True:
    data = sock.recv(65535)[0 if family == 6 else 20:]
    if data[0] == reply and struct.unpack("!H", data[4:6])[0] == ident:
        print("reply of %d bytes" % (len(data) + (40 if family == 6 else 20)))
        break
"""


def df_ping(node, target, mtu, family):
    """A don't-fragment ping of an `mtu`-byte packet from node's test container to `target`."""
    return docker_exec(node, "nsenter -t $(docker inspect -f '{{.State.Pid}}' test%s) -n python3 - %d %s %d"
                       % (node[-1], family, target, mtu), stdin=DF_PING)


def test_site_yml_runs_the_lab_dual_stack_and_teardown_leaves_no_ipv6(lab):
    with lab():
        # From the host-gw case's end when it ran just before (the stored vxlan config, the second
        # node's agent stopped, Docker on extension's MTU 1500): the first site.yml run below is also that
        # case's return to vxlan, checked here (flannel.100, IPv4 subnets kept, pings).
        if ensure_lab(start_from=(LEFT_WITH_AN_AGENT_STOPPED,)) is None and not own_agent_installed():
            run_ok(SITE)
        before = subnets(lab_snapshot())
        try:
            # vxlan over the IPv6 underlay: flannel-v6.100 (70 bytes of headers: FLANNEL_MTU 1430).
            # verify.yml before the checks: it starts the test containers where none run.
            run_ok(SITE, {"network_config_flannel": DUAL_STACK})
            output = run_ok(VERIFY)
            assert "pings -6" in output and "FAILED" not in output, output[-3000:]
            containers6 = check_dual_stack_state("flannel-v6.100", 1430)
            for node, state in host_states().items():
                assert "flannel.100 " in state, "%s: %s" % (node, state)  # the return to vxlan
            # Turning IPv6 on re-keys each lease (10.x.y.0-20&fd00:10:...-64) keeping its IPv4 subnet.
            assert dict((ip, key.split("&")[0]) for ip, key in subnets(lab_snapshot()).items()) == before
            first, second = sorted(NODES)
            containers4 = dict((node, docker_exec(node, CONTAINER_IPV4 % node[-1]).strip()) for node in NODES)
            for node, peer in ((first, second), (second, first)):
                for family, target in ((6, containers6[peer]), (4, containers4[peer])):
                    output = df_ping(node, target, 1430, family)
                    assert output == "reply of 1430 bytes\n", "%s -> %s: %s" % (node, target, output)

            run_ok(TEARDOWN)
            for node in NODES:
                state = docker_exec(node, IPV6_STATE)
                assert state.strip() == "docker ipv6=None fixed-cidr-v6=None mtu=None\ncontainer6=", \
                    "%s after teardown: %s" % (node, state)
            again = changed_counts(run_ok(TEARDOWN))
            assert set(again.values()) == {0}, "second teardown changed: %s" % again

            # host-gw: IPv6 routes via each peer's IPv6 address on the lab network.
            run_ok(SITE, {"network_config_flannel": DUAL_STACK_HOST_GW})
            output = run_ok(VERIFY)
            assert "pings -6" in output and "FAILED" not in output, output[-3000:]
            check_dual_stack_state("eth0", 1500)
            for node in NODES:
                routes = ipv6_routes_via_peers(node)
                assert len(routes) == len(NODES) - 1 and set(route["dev"] for route in routes) == {"eth0"}, \
                    "%s: host-gw IPv6 routes via the peers: %s" % (node, routes)
            containers4 = dict((node, docker_exec(node, CONTAINER_IPV4 % node[-1]).strip()) for node in NODES)
        finally:
            # Back to the inventory's IPv4-only config even when a check failed (the lab is shared);
            # after the checks above, IPv6 turned off with the test containers running.
            run_ok(SITE)
        for node in NODES:
            state = docker_exec(node, IPV6_STATE)
            assert state.strip() == "docker ipv6=None fixed-cidr-v6=None mtu=1450\ncontainer6=", "%s: %s" % (node, state)
            assert docker_exec(node, CONTAINER_IPV4 % node[-1]).strip() == containers4[node], node  # kept its IPv4
        assert all("&" not in key for key in subnets(lab_snapshot()).values())  # IPv4-only keys again
        output = run_ok(VERIFY)
        assert "pings -6" not in output, output[-3000:]
