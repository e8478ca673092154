"""Which overlay peers answer this host across the overlay; prints one JSON object.

  python3 peers_answer.py SUBNET_FILE SECONDS [EXPECTED,...]

The peers are the subnets this host routes inside FLANNEL_NETWORK (subnet.env), other than its
own; each is pinged (ICMP echo, a raw socket: no ping binary needed) at its first address, the
docker0 address the docker role gives every host. Every peer is probed every 0.2 s for up to
SECONDS. Without EXPECTED it prints {"answered": [...], "silent": [...]} and exits 0. With
EXPECTED (comma-separated addresses, may be empty), those must all answer within SECONDS: it
exits 1 naming the silent ones otherwise (a rolling restart checks that a host reaches after its
restart every peer it reached before).
"""

import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time

INTERVAL = 0.2


def subnet_env(path):
    with open(path, encoding="utf-8") as handle:
        return dict(line.strip().split("=", 1) for line in handle if "=" in line)


def peer_addresses(env):
    """The first address of every peer subnet routed inside the flannel network."""
    network = ipaddress.ip_network(env["FLANNEL_NETWORK"])
    own = ipaddress.ip_interface(env["FLANNEL_SUBNET"]).network
    routes = json.loads(subprocess.run(["ip", "-j", "-4", "route", "show"], check=True,
                                       capture_output=True, text=True).stdout)
    peers = set()
    for route in routes:
        if route.get("dst", "default") == "default":
            continue
        dst = ipaddress.ip_network(route["dst"], strict=False)
        if dst.subnet_of(network) and dst != network and not dst.overlaps(own):
            peers.add(str(dst.network_address + 1))
    return sorted(peers, key=ipaddress.ip_address)


def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def echo_request(ident, sequence):
    header = struct.pack("!BBHHH", 8, 0, 0, ident, sequence)
    payload = b"netlab-rolling"
    return struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, sequence) + payload


def probe(addresses, seconds):
    """The addresses that answered an echo request within seconds."""
    ident = os.getpid() & 0xFFFF
    answered = set()
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        deadline = time.monotonic() + seconds
        sequence = 0
        while set(addresses) - answered and time.monotonic() < deadline:
            sequence = (sequence + 1) & 0xFFFF
            for address in set(addresses) - answered:
                sock.sendto(echo_request(ident, sequence), (address, 0))
            round_end = min(deadline, time.monotonic() + INTERVAL)
            while time.monotonic() < round_end:
                if not select.select([sock], [], [], max(0.0, round_end - time.monotonic()))[0]:
                    continue
                packet, (source, _port) = sock.recvfrom(2048)
                offset = (packet[0] & 0x0F) * 4
                kind, _code, _checksum, reply_ident, _sequence = struct.unpack("!BBHHH", packet[offset:offset + 8])
                if kind == 0 and reply_ident == ident and source in addresses:
                    answered.add(source)
    return answered


def main(argv):
    peers = peer_addresses(subnet_env(argv[1]))
    seconds = float(argv[2])
    if len(argv) > 3:
        expected = [address for address in argv[3].split(",") if address]
        answered = probe(expected, seconds)
        silent = [address for address in expected if address not in answered]
        print(json.dumps({"answered": sorted(answered), "silent": silent, "peers": peers}))
        return 1 if silent else 0
    answered = probe(peers, seconds)
    print(json.dumps({"answered": [p for p in peers if p in answered],
                      "silent": [p for p in peers if p not in answered], "peers": peers}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
