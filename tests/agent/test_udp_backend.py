"""The udp backend end to end: the built zipapp on namespace hosts with a real etcd, as flanneld
v0.10's udp backend (TUN flannel0, UDP 8285, each IP packet the whole UDP payload)."""

import os
import signal
import socket
import struct
import subprocess
import time

import pytest
from netaddr import IPNetwork

from support.cluster import Cluster, upstream_absent_reason, wait_for
from support.netns import Pinger, ping

UDP_CONFIG = '{"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0"}'


def _subnet(agent):
    return IPNetwork(agent.wait_env()).cidr


def _link(host, name="flannel0"):
    """`ip -d -j link show` of a device inside a host, or None."""
    result = host.run(["ip", "-d", "-j", "link", "show", name], check=False)
    return __import__("json").loads(result.stdout)[0] if result.returncode == 0 else None


def _routes(host):
    return host.run(["ip", "-4", "route", "show", "dev", "flannel0"], check=False).stdout


def _containers(lab, hosts, subnets):
    return [lab.add_container(host, "%s/20" % (subnet.network + 1)) for host, subnet in zip(hosts, subnets)]


RECEIVER = r"""
import hashlib, socket, sys
server = socket.socket()
server.bind((sys.argv[1], 5201))
server.listen(1)
print("listening", flush=True)
connection, _peer = server.accept()
digest, total = hashlib.sha256(), 0
while True:
    data = connection.recv(1 << 16)
    if not data:
        break
    digest.update(data)
    total += len(data)
print(total, digest.hexdigest(), flush=True)
"""
SENDER = r"""
import hashlib, os, socket, sys
data = os.urandom(int(sys.argv[2]) << 20)
sock = socket.create_connection((sys.argv[1], 5201), timeout=30)
sock.sendall(data)
sock.close()
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""


def _tcp_transfer(source, destination, megabytes=32):
    """Send random bytes over TCP from one container to another; (sent, received) as (length, sha256)."""
    receiver = subprocess.Popen(["ip", "netns", "exec", destination.ns, "python3", "-c", RECEIVER, destination.address],
                                stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert receiver.stdout.readline().strip() == "listening"
        sent = subprocess.run(["ip", "netns", "exec", source.ns, "python3", "-c", SENDER, destination.address,
                               str(megabytes)], stdout=subprocess.PIPE, universal_newlines=True, check=True,
                              timeout=120).stdout.split()
        received = receiver.communicate(timeout=60)[0].split()
    finally:
        if receiver.poll() is None:
            receiver.kill()
    return sent, received


def _udp_cluster(lab, agent_path, name, config=UDP_CONFIG):
    return Cluster(lab, agent_path, config=config, name=name)


def test_no_backend_means_udp_lease_device_route_and_ping_both_ways(lab, agent_path, request):
    with _udp_cluster(lab, agent_path, request.node.name) as cluster:
        hosts = [lab.add_host(mtu=1450), lab.add_host(mtu=1450)]  # one MTU on a LAN, as flannel assumes
        agents = [cluster.agent(host) for host in hosts]
        subnets = [_subnet(agent) for agent in agents]
        for host, agent, subnet in zip(hosts, agents, subnets):
            assert cluster.lease_value(str(subnet)) == '{"PublicIP":"%s"}' % host.address
            mtu = host.mtu - 28
            with open(agent.subnet_file) as handle:
                assert handle.read() == ("FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=%s/20\nFLANNEL_MTU=%d\n"
                                         "FLANNEL_IPMASQ=false\n" % (subnet.network + 1, mtu))
            link = _link(host)
            assert link["mtu"] == mtu and link["linkinfo"]["info_kind"] == "tun" and "UP" in link["flags"]
            assert link["linkinfo"]["info_data"]["type"] == "tun"
            assert link["linkinfo"]["info_data"]["pi"] is False  # IFF_NO_PI
            shown = host.run(["ip", "-4", "-o", "addr", "show", "dev", "flannel0"]).stdout
            assert "inet %s/8 " % subnet.ip in shown
            assert "10.0.0.0/8 " in _routes(host)
            listening = host.run(["ss", "-uln"]).stdout
            assert "%s:8285" % host.address in listening
        one, two = _containers(lab, hosts, subnets)
        assert wait_for(lambda: ping(one.ns, two.address, count=1), what="ping one -> two")
        # TTL 64 - host one forwarding - its proxy - the peer's proxy - host two forwarding
        assert ping(one.ns, two.address, count=3) == [60, 60, 60]
        assert ping(two.ns, one.address, count=3) == [60, 60, 60]
        # TCP both ways, byte for byte (segments batched with UDP_SEGMENT, merged again on receipt).
        sent, received = _tcp_transfer(one, two)
        assert sent == received and sent[0] == str(32 << 20)
        sent, received = _tcp_transfer(two, one)
        assert sent == received
        for agent in agents:
            assert agent.healthz()[0] == 200


def test_packet_on_the_wire_is_the_inner_ip_packet(lab, agent_path, request):
    with _udp_cluster(lab, agent_path, request.node.name) as cluster:
        hosts = [lab.add_host(), lab.add_host()]
        agents = [cluster.agent(host) for host in hosts]
        subnets = [_subnet(agent) for agent in agents]
        assert [_link(host)["mtu"] for host in hosts] == [1472, 1472]
        one, two = _containers(lab, hosts, subnets)
        wait_for(lambda: ping(one.ns, two.address, count=1), what="overlay up")
        capture = subprocess.Popen(["ip", "netns", "exec", hosts[1].ns, "tcpdump", "-i", "eth0", "-c", "1", "-w", "-",
                                    "-U", "udp and dst port 8285 and src host %s" % hosts[0].address],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        ping(one.ns, two.address, count=2)
        raw, _err = capture.communicate(timeout=20)
        # pcap: 24-byte file header, 16-byte record header, then the Ethernet frame.
        frame = raw[24 + 16:]
        outer = frame[14:]
        assert outer[9] == socket.IPPROTO_UDP and socket.inet_ntoa(outer[12:16]) == hosts[0].address
        udp = outer[(outer[0] & 0x0F) * 4:]
        source_port, destination_port, length = struct.unpack("!HHH", udp[:6])
        assert (source_port, destination_port) == (8285, 8285)
        inner = udp[8:length]
        assert inner[0] == 0x45 and struct.unpack("!H", inner[2:4])[0] == len(inner)  # the whole payload
        assert socket.inet_ntoa(inner[12:16]) == one.address and socket.inet_ntoa(inner[16:20]) == two.address
        assert inner[9] == socket.IPPROTO_ICMP and inner[20] == 8  # echo request
        assert inner[8] == 62  # sent with 64, minus host one's forwarding and its proxy


def _pinging_pair(lab, cluster):
    """Two udp hosts (the first reconciling every second) with a container each, pinging."""
    hosts = [lab.add_host(), lab.add_host()]
    agents = [cluster.agent(hosts[0], "-reconcile-interval=1"), cluster.agent(hosts[1])]
    subnets = [_subnet(agent) for agent in agents]
    containers = _containers(lab, hosts, subnets)
    wait_for(lambda: ping(containers[0].ns, containers[1].address, count=1), what="overlay up")
    return hosts, agents, subnets, containers


def test_peer_removal_unroutes_and_counts_drops_and_restart_keeps_subnet(lab, agent_path, request):
    with _udp_cluster(lab, agent_path, request.node.name) as cluster:
        hosts, agents, subnets, (one, two) = _pinging_pair(lab, cluster)
        agents[1].stop(signal.SIGTERM)
        cluster.registry._clients[0].delete("/coreos.com/network/subnets/%s-20" % subnets[1].ip)
        wait_for(lambda: "removed udp route %s" % subnets[1] in agents[0].log, what="route removed")
        assert ping(one.ns, two.address, count=2, timeout=0.5) == []
        wait_for(lambda: "to subnets with no lease (2 in all)" in agents[0].log, timeout=5,
                 what="drops counted and logged")
        # An ICMP net unreachable reaches the sender (a UDP probe: no ICMP is sent about ICMP).
        script = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                  "s.setsockopt(socket.SOL_IP, 11, 1)\ns.connect((sys.argv[1],9))\ns.send(b'x')\n"
                  "s.settimeout(3)\ntry:\n    s.recv(10)\nexcept OSError as e:\n    print(e.errno)\n")
        result = subprocess.run(["ip", "netns", "exec", one.ns, "python3", "-c", script, two.address],
                                stdout=subprocess.PIPE, universal_newlines=True, check=False)
        assert result.stdout.strip() == "101"  # ENETUNREACH
        # Restart after SIGKILL: same subnet, forwarding again.
        again = cluster.agent(hosts[1])
        assert _subnet(again) == subnets[1]
        wait_for(lambda: ping(one.ns, two.address, count=1), what="peer back")
        pid = again.process.pid
        again.stop(signal.SIGKILL)
        assert _link(hosts[1]) is not None  # persistent: the Network stays on flannel0
        assert subprocess.run(["pgrep", "-P", str(pid)], stdout=subprocess.PIPE, check=False).stdout == b""
        third = cluster.agent(hosts[1])
        wait_for(lambda: third.healthz()[0] == 200, what="agent healthy after SIGKILL")
        assert _subnet(third) == subnets[1]
        assert wait_for(lambda: ping(two.ns, one.address, count=1), what="forwarding after SIGKILL")


MALFORMED = [
    ("short", b"\x45\x00\x00\x10" + b"\0" * 8),
    ("not IPv4", b"\x60" + b"\0" * 39),
    ("header length below 5", b"\x43" + b"\0" * 39),
]


def test_malformed_udp_payloads_are_dropped_without_a_traceback(lab, agent_path, request):
    with _udp_cluster(lab, agent_path, request.node.name) as cluster:
        hosts, agents, subnets, (one, two) = _pinging_pair(lab, cluster)
        outside = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0,
                                        socket.inet_aton(hosts[1].address), socket.inet_aton("192.0.2.1")) + b"\0" * 8)
        payloads = [payload for _name, payload in MALFORMED] + [bytes(outside), b""]
        script = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                  "for p in sys.argv[2:]:\n    s.sendto(bytes.fromhex(p),(sys.argv[1],8285))\n")
        hosts[1].run(["python3", "-c", script, hosts[0].address] + [payload.hex() for payload in payloads])
        wait_for(lambda: "received malformed (short or not IPv4) (4 in all)" in agents[0].log, timeout=5,
                 what="malformed payloads counted (log:\n%s)" % agents[0].log)
        wait_for(lambda: "received for addresses outside 10.0.0.0/8 (1 in all)" in agents[0].log,
                 timeout=5, what="outside payload counted")
        assert "Traceback" not in agents[0].log and "worker" not in agents[0].log.replace("forwarding worker", "")
        assert ping(one.ns, two.address, count=2) and ping(two.ns, one.address, count=1)


def test_interop_with_upstream_flanneld_udp(lab, agent_path, request):
    reason = upstream_absent_reason()
    if reason:
        pytest.skip(reason)
    with _udp_cluster(lab, agent_path, request.node.name) as cluster:
        hosts = [lab.add_host(), lab.add_host()]
        ours, upstream = cluster.agent(hosts[0]), cluster.agent(hosts[1], kind="upstream")
        subnet, upstream_subnet = _subnet(ours), _subnet(upstream)
        upstream.wait_ready()
        # Both write the same lease value, byte for byte.
        assert cluster.lease_value(str(upstream_subnet)) == '{"PublicIP":"%s"}' % hosts[1].address
        assert cluster.lease_value(str(subnet)) == '{"PublicIP":"%s"}' % hosts[0].address
        one, two = _containers(lab, hosts, [subnet, upstream_subnet])
        assert wait_for(lambda: ping(one.ns, two.address, count=1), what="ours -> upstream")
        assert ping(two.ns, one.address, count=3) == [60, 60, 60]
        assert ping(one.ns, two.address, count=3) == [60, 60, 60]
        assert "udp route %s via %s:8285" % (upstream_subnet, hosts[1].address) in ours.log
        for source, destination in ((one, two), (two, one)):
            sent, received = _tcp_transfer(source, destination, megabytes=8)
            assert sent == received and sent[0] == str(8 << 20)


def test_forwarding_through_an_etcd_outage_and_across_a_sigkill_restart(lab, agent_path, request):
    """Figures for RELIABILITY.md: pings at 0.1 s while etcd is stopped, then across a SIGKILL."""
    with _udp_cluster(lab, agent_path, request.node.name) as cluster:
        hosts = [lab.add_host(), lab.add_host()]
        agents = [cluster.agent(host) for host in hosts]
        subnets = [_subnet(agent) for agent in agents]
        one, two = _containers(lab, hosts, subnets)
        wait_for(lambda: ping(one.ns, two.address, count=1), what="overlay up")
        pinger = Pinger(one.ns, two.address, count=50, interval=0.1)
        time.sleep(0.5)
        cluster.stop_etcd()
        wait_for(lambda: agents[0].healthz()[0] == 503, what="agent seeing etcd gone")
        sent, replies = pinger.result()
        print("udp etcd outage: %d of %d pings at 0.1 s lost" % (sent - replies, sent))
        assert replies == sent, "echoes %s had no reply" % pinger.lost
        cluster.start_etcd()
        wait_for(lambda: agents[1].healthz()[0] == 200, timeout=20, what="agent healthy after etcd returned")
        pinger = Pinger(one.ns, two.address, count=100, interval=0.1)
        time.sleep(3)
        agents[1].stop(signal.SIGKILL)
        started = time.monotonic()
        again = cluster.agent(hosts[1])
        wait_for(lambda: again.healthz()[0] == 200, what="restarted agent healthy")
        print("udp restart: healthy %.2f s after SIGKILL" % (time.monotonic() - started))
        sent, replies = pinger.result()
        print("udp restart: %d of %d pings at 0.1 s lost" % (sent - replies, sent))
        assert _subnet(again) == subnets[1]
        assert sent - replies <= 10  # the goal: under 1 s of pings


def test_forwarding_workers_hold_only_their_own_queue_and_sockets(lab, agent_path, request):
    """A worker forked by the agent keeps its TUN queue, its UDP socket and its end of the control
    pair, and none of the agent's other descriptors: a worker still exiting after the agent was
    killed once held /healthz's listener, and the restarted agent could not listen."""
    with _udp_cluster(lab, agent_path, request.node.name) as cluster:
        agent = cluster.agent(lab.add_host())
        agent.wait_ready()
        pid = agent.process.pid
        workers = subprocess.run(["pgrep", "-P", str(pid)], stdout=subprocess.PIPE, universal_newlines=True,
                                 check=False).stdout.split()
        assert workers

        def descriptors(process):
            directory = "/proc/%s/fd" % process
            return dict((int(fd), os.readlink(os.path.join(directory, fd))) for fd in os.listdir(directory))

        with open("/proc/%d/net/udp" % pid) as handle:
            udp_sockets = set("socket:[%s]" % line.split()[9] for line in handle.read().splitlines()[1:])
        agent_sockets = set(target for target in descriptors(pid).values() if target.startswith("socket:"))
        assert agent_sockets - udp_sockets  # the agent's own: /healthz's listener, netlink, etcd
        for worker in workers:
            held = sorted(target for fd, target in descriptors(worker).items() if fd > 2)
            sockets = [target for target in held if target.startswith("socket:")]
            assert held.count("/dev/net/tun") == 1 and len(sockets) == 2 and len(held) == 3, held
            assert len(set(sockets) & udp_sockets) == 1 and not set(sockets) & (agent_sockets - udp_sockets), (
                held, agent_sockets)
