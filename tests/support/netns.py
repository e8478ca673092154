"""Network-namespace labs for tests that need real kernel objects.

A Lab is a "LAN" namespace holding a bridge, N host namespaces each wired to it by a veth
(`eth0`, 172.31.X.1N/24, default route via the LAN's .1), and optional container namespaces
behind a host (veth into bridge `cbr0` in the host, like docker0). Every namespace is named
`nlt-<random tag>-...`, so concurrent runs never collide, and all traffic stays inside them:
nothing is created in, or routed through, the root namespace.
"""

import binascii
import os
import socket
import subprocess
import sys
import time

try:
    from pyroute2 import NetNS
except ImportError:
    NetNS = None

PING_SCRIPT = r"""
import os, socket, struct, sys, time
address, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
size = int(sys.argv[5]) if len(sys.argv) > 5 else 0  # the whole IP packet, sent unfragmented
start_at = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0  # unix time of the first echo (0: at once)
v6 = ":" in address
def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
if v6:  # the kernel fills in the ICMPv6 checksum and hands replies over without the IPv6 header
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    request, reply, header_size = 128, 129, 40
    if size:
        sock.setsockopt(socket.IPPROTO_IPV6, 62, 1)  # IPV6_DONTFRAG
else:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    request, reply, header_size = 8, 0, 20
    if size:
        sock.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: DF set
payload = b"netlab".ljust(max(6, size - header_size - 8), b"x") if size else b"netlab"
# A reply is judged by the time the kernel queued it (SO_TIMESTAMPNS), not the time this process
# reads it: on a loaded machine the pinger may sleep past a deadline with the reply waiting.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
ident, replies, sent_at, lost = os.getpid() & 0xFFFF, 0, {}, []
def arrival(ancillary):
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = struct.unpack("ll", data[:struct.calcsize("ll")])
            return seconds + nanoseconds / 1e9
    return time.time()
def take(wait):  # one packet, waiting at most `wait` s (0: one already queued); None: none came
    global replies
    sock.settimeout(wait)  # 0: non-blocking, a packet already queued or none
    try:
        packet, ancillary, _flags, source = sock.recvmsg(65536, 256)
    except (socket.timeout, BlockingIOError):
        return None
    header = 0 if v6 else (packet[0] & 0x0F) * 4
    kind, _code, _sum, rid, rseq = struct.unpack("!BBHHH", packet[header:header + 8])
    if source[0] != address or kind != reply or rid != ident or rseq not in sent_at:
        return False
    if arrival(ancillary) - sent_at.pop(rseq) > timeout:
        lost.append(rseq)
        return False
    print("reply from %s ttl=%d size=%d" % (address, 0 if v6 else packet[8], len(packet) - header))
    replies += 1
    return True
def expire(now):
    for seq in [seq for seq, when in sent_at.items() if now - when > timeout]:
        lost.append(seq)
        del sent_at[seq]
time.sleep(max(0.0, start_at - time.time()))
for seq in range(count):
    started = time.monotonic()
    body = struct.pack("!BBHHH", request, 0, 0, ident, seq) + payload
    if not v6:
        body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    sending = time.time()
    try:
        sock.sendto(body, (address, 0))
    except OSError as error:  # EMSGSIZE: bigger than the route's MTU
        print("send failed: %s" % error)
        lost.append(seq)
        continue
    sent_at[seq] = sending
    deadline = time.monotonic() + timeout
    while seq in sent_at and time.monotonic() < deadline:
        take(max(deadline - time.monotonic(), 0.001))
    while take(0) is not None:  # what queued up while this process was not running
        pass
    expire(time.time())
    sys.stdout.flush()
    time.sleep(max(0.0, interval - (time.monotonic() - started)))
print("lost=%s" % ",".join(str(seq) for seq in sorted(lost)))
print("sent=%d replies=%d" % (count, replies))
sys.exit(0 if replies else 1)
"""


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Poll until predicate() is truthy; return its value or fail with `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def run(argv, check=True):
    """Run a command; on failure the error names the command and its stderr."""
    result = subprocess.run([str(word) for word in argv], stdout=subprocess.PIPE, check=False,
                            stderr=subprocess.PIPE, universal_newlines=True)
    if check and result.returncode != 0:
        command = " ".join(map(str, argv))
        raise RuntimeError("%s failed (%d): %s" % (command, result.returncode, result.stderr.strip()))
    return result


def run_in(ns, argv, check=True):
    """Run argv inside namespace `ns`."""
    return run(["ip", "netns", "exec", ns] + list(argv), check=check)


def ping(ns, address, count=1, timeout=2.0, size=None):
    """ICMP (ICMPv6 for an IPv6 address) echo from `ns` (no ping binary needed). Returns the reply
    TTLs (0 for IPv6); [] when none came. `size`: the whole IP packet's, sent with don't-fragment
    (IPv4's DF, IPV6_DONTFRAG), so that only a path whose MTU holds it answers."""
    count, timeout = max(1, min(int(count), 10)), max(0.1, min(float(timeout), 5.0))
    extra = [0.0, int(size)] if size else []
    result = run_in(ns, [sys.executable, "-c", PING_SCRIPT, address, count, timeout] + extra, check=False)
    return [int(line.split("ttl=", 1)[1].split()[0]) for line in result.stdout.splitlines() if "ttl=" in line]


class Pinger:
    """A paced ICMP echo run in the background (at most 3000 echoes, at least 20 ms apart)."""

    def __init__(self, ns, address, count, interval=0.1, timeout=1.0, start_at=0.0, answered_first=False):
        """`start_at`: the unix time of the first echo (0: at once), for echoes sent from several
        namespaces at the same moment. `answered_first`: wait (up to 20 s) until one echo is
        answered before counting, for a case that counts every loss: the path's first packets
        wait for ARP on both sides, which a loaded machine can stretch past the timeout."""
        count, interval = max(1, min(int(count), 3000)), max(0.02, float(interval))
        self.lost = []
        if answered_first:
            wait_for(lambda: ping(ns, address, count=1, timeout=1.0), 20, what="an echo from %s to %s answered"
                     % (ns, address))
        self.process = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", PING_SCRIPT, address,
                                         str(count), str(min(timeout, interval * 10)), str(interval), "0",
                                         repr(float(start_at))],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)

    def result(self, timeout=600):
        """(sent, replies) once the run is over; `lost` then lists the echoes (numbered from 0) that
        had no reply in time."""
        out, _err = self.process.communicate(timeout=timeout)
        for line in out.splitlines():
            if line.startswith("lost="):
                self.lost = [int(seq) for seq in line[5:].split(",") if seq]
            if line.startswith("sent="):
                sent, replies = line.split()
                return int(sent.split("=")[1]), int(replies.split("=")[1])
        raise RuntimeError("pinger printed no summary: %r" % out[-500:])


class Host:
    """A host namespace on the lab LAN: `ns`, `ifname` (eth0), `address`, `mtu`."""

    def __init__(self, lab, name, ns, address, mtu):
        self.lab, self.name, self.ns, self.address, self.mtu = lab, name, ns, address, mtu
        self.ifname = "eth0"

    def ipr(self):
        """A pyroute2 NetNS handle into this host, closed by the lab's cleanup."""
        return self.lab.netns_handle(self.ns)

    def run(self, argv, check=True):
        return run_in(self.ns, argv, check)


class Container:
    """A namespace behind a host: `ns`, `address` (x.y.z.2 of the host's subnet), `gateway`, and
    `address6` (<IPv6 subnet>::2) when it has an IPv6 address too."""

    def __init__(self, ns, address, gateway, address6=None):
        self.ns, self.address, self.gateway, self.address6 = ns, address, gateway, address6


def _next_ipv6(address):
    packed = bytearray(socket.inet_pton(socket.AF_INET6, address))
    packed[-1] += 1  # a subnet's first address ends in 1: never overflows
    return socket.inet_ntop(socket.AF_INET6, bytes(packed))


class Lab:
    def __init__(self, lan_prefix="172.31.250", tag=None):
        self.tag = tag or binascii.hexlify(os.urandom(3)).decode()
        self.lan_prefix = lan_prefix
        self.namespaces = []
        self.lan_ns = self._namespace("lan")
        self.hosts = []
        self.containers = []
        self._handles = []
        try:
            run_in(self.lan_ns, ["ip", "link", "add", "br0", "type", "bridge"])
            run_in(self.lan_ns, ["ip", "addr", "add", "%s.1/24" % lan_prefix, "dev", "br0"])
            run_in(self.lan_ns, ["ip", "link", "set", "br0", "up"])
        except Exception:
            self.cleanup()
            raise

    def _namespace(self, suffix):
        name = "nlt-%s-%s" % (self.tag, suffix)
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run_in(name, ["ip", "link", "set", "lo", "up"])
        return name

    def add_host(self, mtu=1500):
        """A new host namespace with eth0 on the LAN and a default route via the LAN's .1."""
        number = len(self.hosts) + 1
        name = "h%d" % number
        ns = self._namespace(name)
        address = "%s.%d" % (self.lan_prefix, 10 + number)
        run_in(ns, ["ip", "link", "add", "eth0", "mtu", mtu, "type", "veth", "peer", "name", "lan-" + name,
                    "mtu", mtu, "netns", self.lan_ns])
        run_in(self.lan_ns, ["ip", "link", "set", "lan-" + name, "master", "br0", "up"])
        run_in(ns, ["ip", "addr", "add", address + "/24", "dev", "eth0"])
        run_in(ns, ["ip", "link", "set", "eth0", "up"])
        run_in(ns, ["ip", "route", "add", "default", "via", "%s.1" % self.lan_prefix])
        run_in(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # The carrier comes up after both ends are up, when the kernel's link watch gets to it
        # (later on a loaded machine): a test comparing the host's links before and after must
        # not see it change in between.
        wait_for(lambda: run_in(ns, ["cat", "/sys/class/net/eth0/operstate"]).stdout.strip() == "up", 10,
                 interval=0.02, what="the carrier of eth0 in %s" % ns)
        host = Host(self, name, ns, address, mtu)
        self.hosts.append(host)
        return host

    def add_container(self, host, subnet, subnet6=None, mtu=None):
        """A container namespace behind `host`: host bridge cbr0 = subnet .1, container = .2; with
        `subnet6` ('<first address>/len', FLANNEL_IPV6_SUBNET's form) cbr0 gets that address and the
        container the next one (no DAD), with an IPv6 default route; with `mtu`, the container's
        link and cbr0 have it (FLANNEL_MTU, as Docker sets them)."""
        base = subnet.split("/")[0].rsplit(".", 1)[0]
        prefixlen = subnet.split("/")[1]
        ns = self._namespace("%sc%d" % (host.name, len(self.containers) + 1))
        gateway, address = base + ".1", base + ".2"
        if host.run(["ip", "link", "show", "cbr0"], check=False).returncode != 0:
            host.run(["ip", "link", "add", "cbr0", "type", "bridge"])
            host.run(["ip", "addr", "add", "%s/%s" % (gateway, prefixlen), "dev", "cbr0"])
            host.run(["ip", "link", "set", "cbr0", "up"])
        peer = "vc%d" % (len(self.containers) + 1)
        run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", host.ns])
        host.run(["ip", "link", "set", peer, "master", "cbr0", "up"])
        run_in(ns, ["ip", "addr", "add", "%s/%s" % (address, prefixlen), "dev", "eth0"])
        run_in(ns, ["ip", "link", "set", "eth0", "up"])
        run_in(ns, ["ip", "route", "add", "default", "via", gateway])
        address6 = None
        if subnet6 is not None:
            gateway6, prefixlen6 = subnet6.split("/")
            address6 = _next_ipv6(gateway6)
            host.run(["sysctl", "-qw", "net.ipv6.conf.cbr0.disable_ipv6=0"])  # as Docker does for docker0
            host.run(["ip", "-6", "addr", "replace", subnet6, "dev", "cbr0", "nodad"])
            run_in(ns, ["ip", "-6", "addr", "add", "%s/%s" % (address6, prefixlen6), "dev", "eth0", "nodad"])
            run_in(ns, ["ip", "-6", "route", "add", "default", "via", gateway6])
        if mtu is not None:
            host.run(["ip", "link", "set", "cbr0", "mtu", mtu])
            run_in(ns, ["ip", "link", "set", "eth0", "mtu", mtu])
        container = Container(ns, address, gateway, address6)
        self.containers.append(container)
        return container

    def netns_handle(self, ns):
        handle = NetNS(ns)
        self._handles.append(handle)
        return handle

    def cleanup(self):
        """Close handles and delete every namespace this lab made (their links go with them)."""
        for handle in self._handles:
            try:
                handle.close()
            except Exception:
                pass
        for name in reversed(self.namespaces):
            run(["ip", "netns", "del", name], check=False)
