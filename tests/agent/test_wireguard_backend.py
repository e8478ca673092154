"""The wireguard backend on namespace hosts with a real etcd: the built agent, containers pinging
across, the underlay captured. The agent runs the kernel's WireGuard where the kernel can make a
wireguard link, else wireguard-go: the tests probe the kernel as the agent does (a wireguard link
made in a test namespace) and check that the agent chose and logged the same path. This
machine's kernel has no wireguard module, so here they run wireguard-go; the kernel path's
netlink calls are unit-tested only (tests/unit/agent/test_wireguard_kernel_device.py).

Each agent gets a /run/wireguard of its own (Cluster(wireguard=True)): wireguard-go's control
socket path does not depend on the network namespace.
"""

import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import time
import urllib.request

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.wireguard_keys import public_key
from support.cluster import HEALTHZ_PORT, Cluster, wait_for
from support.netns import Pinger, ping
from support.pcap import ip_packets

CONFIG = ('{"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0", '
          '"Backend": {"Type": "wireguard", "PersistentKeepaliveInterval": 25}}')
# Upstream's default: no persistent keepalive, so nothing but the agent itself starts a handshake.
NO_KEEPALIVE_CONFIG = CONFIG.replace(', "PersistentKeepaliveInterval": 25', "")
VXLAN_CONFIG = ('{"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0", '
                '"Backend": {"Type": "vxlan", "VNI": 100}}')
PORT = 51820
PSK = "q8ZLY0mF3sGz9eJv2ZCwT7kR1nXo4pHd6aUiMbEcV5w="

pytestmark = pytest.mark.skipif(not shutil.which("wireguard-go"), reason="wireguard-go is not installed "
                                "(make prereqs installs it)")


def _kernel_has_wireguard(host):
    """Whether the kernel makes a wireguard link (in `host`'s namespace, removed at once)."""
    made = host.run(["ip", "link", "add", "wgprobe", "type", "wireguard"], check=False).returncode == 0
    if made:
        host.run(["ip", "link", "del", "wgprobe"])
    return made


def _chosen_path(host):
    """The start-up log line the agent must write on `host`'s kernel: which WireGuard and why."""
    if _kernel_has_wireguard(host):
        return "wireguard: kernel runs flannel-wg: the kernel has the wireguard module"
    return "wireguard: wireguard-go runs flannel-wg: the kernel has no wireguard module (creating a wireguard link: "


def _subnet(agent):
    return IPNetwork(agent.wait_env()).cidr


def _containers(lab, hosts, subnets):
    return [lab.add_container(host, "%s/%d" % (subnet.ip, subnet.prefixlen)) for host, subnet in zip(hosts, subnets)]


def _wg_show(agent):
    """`wg show flannel-wg dump` inside the host, with the host's own /run/wireguard."""
    sockets = os.path.join(os.path.dirname(agent.key_file), "wireguard")
    return agent.host.run(["sh", "-c", 'mount --bind "$0" /run/wireguard && wg show flannel-wg dump', sockets]).stdout


@pytest.fixture
def wg_cluster(lab, agent_path, request):
    with Cluster(lab, agent_path, config=CONFIG, name=request.node.name, wireguard=True) as cluster:
        yield cluster


def _pair(lab, cluster, *flags):
    hosts = [lab.add_host(), lab.add_host()]
    agents = [cluster.agent(host, *flags) for host in hosts]
    subnets = [_subnet(agent) for agent in agents]
    containers = _containers(lab, hosts, subnets)
    wait_for(lambda: ping(containers[0].ns, containers[1].address, count=1), timeout=20, what="overlay up")
    return hosts, agents, subnets, containers


def _capture(host, peer_address, seconds_before=1.0):
    """tcpdump on the host's eth0 of everything between it and `peer_address` (pcap bytes)."""
    return subprocess.Popen(["ip", "netns", "exec", host.ns, "tcpdump", "-i", "eth0", "--immediate-mode", "-U", "-w", "-",
                             "host %s and host %s" % (host.address, peer_address)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def test_ping_across_with_only_wireguard_udp_on_the_underlay(lab, wg_cluster):
    hosts, agents, subnets, (one, two) = _pair(lab, wg_cluster)
    value = json.loads(wg_cluster.lease_value(str(subnets[0])))
    key = open(agents[0].key_file).read().strip()
    assert value == {"PublicIP": hosts[0].address, "BackendType": "wireguard",
                     "BackendData": {"PublicKey": public_key(key), "Port": PORT}}
    assert agents[0].env()["FLANNEL_MTU"] == "1420"  # 1500 - 80
    assert _chosen_path(hosts[0]) in agents[0].log
    assert stat.S_IMODE(os.stat(agents[0].key_file).st_mode) == 0o600
    dump = _wg_show(agents[0]).splitlines()
    assert dump[0].split("\t")[:3] == [key, public_key(key), str(PORT)]
    peer = dump[1].split("\t")
    assert peer[0] == public_key(open(agents[1].key_file).read().strip())
    assert (peer[2], peer[3], peer[7]) == ("%s:%d" % (hosts[1].address, PORT), str(subnets[1]), "25")

    capture = _capture(hosts[0], hosts[1].address)
    time.sleep(1.0)
    assert len(ping(one.ns, two.address, count=5, timeout=1)) == 5
    assert len(ping(two.ns, one.address, count=5, timeout=1)) == 5
    time.sleep(0.5)
    capture.send_signal(signal.SIGINT)
    raw = capture.communicate(timeout=10)[0]
    packets = ip_packets(raw)
    assert len(packets) >= 20  # 10 echoes and 10 replies, each way through the underlay
    inner = socket.inet_aton(one.address) + socket.inet_aton(two.address)
    for packet in packets:
        udp = packet[(packet[0] & 0x0F) * 4:]
        assert packet[9] == socket.IPPROTO_UDP
        assert struct.unpack("!HH", udp[:4]) == (PORT, PORT)
        assert inner not in packet and inner[4:] + inner[:4] not in packet  # no inner header in clear


def _metrics(host):
    with urllib.request.urlopen("http://%s:%d/metrics" % (host.address, HEALTHZ_PORT), timeout=5) as response:
        return response.read().decode()


def test_sigkill_and_restart_keep_the_key_and_the_traffic(lab, wg_cluster):
    hosts, agents, subnets, (one, two) = _pair(lab, wg_cluster)
    key = open(agents[0].key_file).read()
    pinger = Pinger(one.ns, two.address, count=60, interval=0.1)
    time.sleep(1.0)
    agents[0].stop(signal.SIGKILL)
    restarted = wg_cluster.agent(hosts[0])
    restarted.wait_ready()
    sent, replies = pinger.result()
    assert open(agents[0].key_file).read() == key
    found = ("kernel runs flannel-wg: flannel-wg exists and is the kernel's" if _kernel_has_wireguard(hosts[0])
             else "wireguard-go runs flannel-wg: flannel-wg exists, run by a wireguard-go")
    assert "using the private key" in restarted.log and "wireguard: " + found in restarted.log
    assert "created flannel-wg" not in restarted.log
    # Lost echoes are counted for BENCHMARKS.md, not asserted (the machine's load decides them).
    print("wireguard SIGKILL + restart: %d of %d echoes at 0.1 s lost" % (sent - replies, sent))
    assert replies > 0
    series = 'flannel_wireguard_handshake_age_seconds{public_ip="%s"' % hosts[1].address
    line = wait_for(lambda: [row for row in _metrics(hosts[0]).splitlines() if row.startswith(series)],
                    what="handshake age")[0]
    assert 'subnet="%s"' % subnets[1] in line and float(line.rsplit(" ", 1)[1]) < 60


def test_hostile_leases_are_skipped_and_the_good_peer_kept(lab, wg_cluster):
    hosts, agents, subnets, (one, two) = _pair(lab, wg_cluster)
    good_key = json.loads(wg_cluster.lease_value(str(subnets[1])))["BackendData"]["PublicKey"]
    hostile = {
        "10.50.0.0-20": {"PublicKey": "not-a-key", "Port": PORT},
        "10.51.0.0-20": {"PublicKey": good_key, "Port": PORT},  # another lease's key, created later
        "10.52.0.0-20": {"PublicKey": public_key("a" * 43 + "="), "Port": 70000},
    }
    for number, (key, data) in enumerate(sorted(hostile.items())):
        value = json.dumps({"PublicIP": "172.31.250.%d" % (90 + number), "BackendType": "wireguard",
                            "BackendData": data})
        wg_cluster.raw.write("/coreos.com/network/subnets/" + key, value, ttl=600)
    log = wait_for(lambda: agents[0].log if "10.52.0.0/20" in agents[0].log and "10.51.0.0-20" in agents[0].log
                   else None, what="hostile leases logged")
    assert "ignoring lease 10.50.0.0/20: PublicKey: 'not-a-key' is not a WireGuard key" in log
    assert "ignoring lease 10.52.0.0/20: Port: 70000 is not a UDP port (1 to 65535)" in log
    assert "skipping lease 10.51.0.0-20: its PublicKey %s is held by lease %s-20" % (good_key, subnets[1].ip) in log
    assert "Traceback" not in log
    assert len(_wg_show(agents[0]).splitlines()) == 2  # the device and the one good peer
    assert len(ping(one.ns, two.address, count=3, timeout=1)) == 3
    assert agents[0].healthz()[0] == 200


def test_psk_and_the_underlay_mtu_reach_the_device_and_both_ends_agree(lab, agent_path, request):
    config = json.loads(CONFIG)
    config["Backend"].update(PSK=PSK, MTU=1400, ListenPort=51999)
    with Cluster(lab, agent_path, config=json.dumps(config), name=request.node.name, wireguard=True) as cluster:
        hosts, agents, subnets, (one, two) = _pair(lab, cluster)  # pings across: both ends hold the PSK
        assert agents[0].env()["FLANNEL_MTU"] == "1320"  # Backend.MTU is the underlay's: 1400 - 80
        assert "mtu 1320 " in hosts[0].run(["ip", "link", "show", "flannel-wg"]).stdout
        dump = _wg_show(agents[0]).splitlines()
        assert dump[0].split("\t")[2] == "51999"
        peer = dump[1].split("\t")
        assert (peer[1], peer[2]) == (PSK, "%s:51999" % hosts[1].address)
        assert PSK not in agents[0].log and PSK not in cluster.lease_value(str(subnets[0]))
        assert len(ping(two.ns, one.address, count=3, timeout=1)) == 3


def test_live_switch_vxlan_to_wireguard_and_back(lab, agent_path, request):
    with Cluster(lab, agent_path, config=VXLAN_CONFIG, name=request.node.name, wireguard=True) as cluster:
        hosts, agents, subnets, (one, two) = _pair(lab, cluster)
        lost = []
        for config, device in ((CONFIG, "flannel-wg"), (VXLAN_CONFIG, "flannel.100")):
            pinger = Pinger(one.ns, two.address, count=50, interval=0.1)
            time.sleep(0.5)
            cluster.registry.put_config(config)
            for host in hosts:
                wait_for(lambda: host.run(["ip", "link", "show", device], check=False).returncode == 0,
                         what="%s on %s" % (device, host.name))
            sent, replies = pinger.result()
            lost.append(sent - replies)
            assert len(ping(one.ns, two.address, count=3, timeout=1)) == 3
        for host in hosts:
            assert host.run(["ip", "link", "show", "flannel-wg"], check=False).returncode != 0
        print("echoes at 0.1 s lost: vxlan -> wireguard %d, wireguard -> vxlan %d" % tuple(lost))


def _handshakes(agent):
    """{peer public key: latest handshake (unix time, 0 for none)} of the agent's flannel-wg."""
    return dict((line.split("\t")[0], int(line.split("\t")[4])) for line in _wg_show(agent).splitlines()[1:])


def test_one_end_opens_each_session_so_first_pings_both_ways_at_once_are_answered(lab, agent_path, request):
    """Without a keepalive, WireGuard handshakes at a peer's first packet; when both ends send
    their first packets at once (verify.yml's pings both ways) the handshakes cross and both ends
    hold their packets for WireGuard's 5 s retry. The end with the smaller public key opens the
    session when it programs the peer: a handshake before any traffic, then no crossing."""
    assert '"PersistentKeepaliveInterval"' not in NO_KEEPALIVE_CONFIG
    with Cluster(lab, agent_path, config=NO_KEEPALIVE_CONFIG, name=request.node.name, wireguard=True) as cluster:
        hosts = [lab.add_host(), lab.add_host()]
        agents = [cluster.agent(host) for host in hosts]
        subnets = [_subnet(agent) for agent in agents]
        keys = [public_key(open(agent.key_file).read().strip()) for agent in agents]
        opener = 0 if keys[0] < keys[1] else 1

        def both_handshaken():
            return all(_handshakes(agents[index]).get(keys[1 - index]) for index in (0, 1))

        wait_for(both_handshaken, timeout=30, what="a handshake between the two devices before any traffic")
        dump = _wg_show(agents[opener]).splitlines()[1].split("\t")
        assert dump[7] == "off"  # the keepalive put back after the one that opened the session
        one, two = _containers(lab, hosts, subnets)
        pingers = [Pinger(one.ns, two.address, count=3, interval=0.5, timeout=1.0),
                   Pinger(two.ns, one.address, count=3, interval=0.5, timeout=1.0)]
        assert [pinger.result() for pinger in pingers] == [(3, 3), (3, 3)]


def _cpu_seconds(agent):
    """The agent process's user + system CPU time so far (/proc/<pid>/stat)."""
    with open("/proc/%d/stat" % agent.process.pid) as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.long_wait
def test_an_idle_pair_past_wireguards_180_s_still_answers_first_pings_both_ways_at_once(lab, agent_path, request):
    """WireGuard refuses a session's keys 180 s after its handshake (REJECT_AFTER_TIME) and renews
    it only when one end sends: a pair idle longer has no session, and its first packets both ways
    at once cross two handshakes (the test above). The opening end opens the session again before
    it expires: after 190 s with no traffic the devices report a handshake later than the first
    one, and pings both ways at once, as verify.yml's (3 echoes, 2 s each), are all answered.
    WireGuard's 180 s is fixed in the device, so this test idles 190 s."""
    with Cluster(lab, agent_path, config=NO_KEEPALIVE_CONFIG, name=request.node.name, wireguard=True) as cluster:
        hosts = [lab.add_host(), lab.add_host()]
        agents = [cluster.agent(host) for host in hosts]
        subnets = [_subnet(agent) for agent in agents]
        keys = [public_key(open(agent.key_file).read().strip()) for agent in agents]
        one, two = _containers(lab, hosts, subnets)

        def handshakes():
            return [_handshakes(agents[index]).get(keys[1 - index]) for index in (0, 1)]

        wait_for(lambda: all(handshakes()), timeout=30, what="the session opened by one end")
        first = max(handshakes())
        cpu = [_cpu_seconds(agent) for agent in agents]
        # Nothing crosses the overlay meanwhile: the devices are read from the hosts themselves.
        time.sleep(max(0.0, first + 190 - time.time()))
        renewed = handshakes()
        cpu = [_cpu_seconds(agent) - used for agent, used in zip(agents, cpu)]
        start_at = time.time() + 0.5  # both first echoes in the same millisecond
        pingers = [Pinger(one.ns, two.address, count=3, interval=1.0, timeout=2.0, start_at=start_at),
                   Pinger(two.ns, one.address, count=3, interval=1.0, timeout=2.0, start_at=start_at)]
        results = [pinger.result() for pinger in pingers]
        print("idle from %d: last handshakes %s, agent CPU while idle %.2f and %.2f s, echoes %s"
              % (first, renewed, cpu[0], cpu[1], results))
        assert ([stamp > first for stamp in renewed], results) == ([True, True], [(3, 3), (3, 3)])
