"""What the udp backend's agent side and its worker processes share, and the IP header work the
worker does: the route table message (agent -> worker), the shared counter block (worker -> agent),
and TTL, checksum and ICMP net-unreachable for IPv4 headers."""

import mmap
import socket
import struct

ROUTE = struct.Struct("!IBIH")  # subnet, prefix length, peer PublicIP, peer port
COMMAND_ROUTES = b"R"
COMMAND_STOP = b"S"
ICMP_TTL = 8  # as flanneld's proxy

COUNTERS = ("tun_rx", "udp_tx", "udp_rx", "tun_tx", "no_route", "icmp_sent", "ttl_expired",
            "malformed_tun", "malformed_udp", "outside_network", "send_errors")
_COUNTER_BLOCK = struct.Struct("=%dQ" % len(COUNTERS))


class CounterBlock:
    """One row of counters per worker in shared memory (an anonymous MAP_SHARED mapping made
    before fork); the worker writes its row, the agent sums them."""

    def __init__(self, workers):
        self.workers = workers
        self.memory = mmap.mmap(-1, max(_COUNTER_BLOCK.size * workers, 1))

    def write(self, worker, values):
        _COUNTER_BLOCK.pack_into(self.memory, worker * _COUNTER_BLOCK.size, *values)

    def totals(self):
        sums = [0] * len(COUNTERS)
        for worker in range(self.workers):
            for position, value in enumerate(_COUNTER_BLOCK.unpack_from(self.memory, worker * _COUNTER_BLOCK.size)):
                sums[position] += value
        return dict(zip(COUNTERS, sums))

    def clear(self, worker):
        self.write(worker, [0] * len(COUNTERS))


def pack_routes(routes):
    """One control message for a whole table: routes = [(subnet int, prefixlen, ip int, port)]."""
    return COMMAND_ROUTES + b"".join(ROUTE.pack(*route) for route in routes)


def unpack_routes(message):
    """[(mask, {subnet int: (ip text, port)})], longest prefix first."""
    tables = {}
    for offset in range(1, len(message) - ROUTE.size + 1, ROUTE.size):
        subnet, prefixlen, ip, port = ROUTE.unpack_from(message, offset)
        mask = (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF
        tables.setdefault(mask, {})[subnet & mask] = (socket.inet_ntoa(struct.pack("!I", ip)), port)
    return sorted(tables.items(), reverse=True)


def ipv4_checksum(data):
    """The Internet checksum of `data` (bytes-like), computed at C speed: a big-endian integer
    is congruent to the sum of its 16-bit words modulo 0xFFFF."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    return ~(int.from_bytes(data, "big") % 0xFFFF) & 0xFFFF


def decrement_ttl(buf, offset=0):
    """TTL - 1 with the header checksum patched (RFC 1624) for the packet at buf[offset:];
    False when the packet must die."""
    ttl = buf[offset + 8]
    if ttl <= 1:
        return False
    buf[offset + 8] = ttl - 1
    check = ((buf[offset + 10] << 8) | buf[offset + 11]) + 0x100
    check = (check & 0xFFFF) + (check >> 16)
    buf[offset + 10] = check >> 8
    buf[offset + 11] = check & 0xFF
    return True


def net_unreachable(offender, length, source):
    """flanneld's ICMP destination-unreachable (code 0, net) for `offender`, from `source`
    (4 bytes), or None where RFC 792 says not to send one (ICMP, later fragments).

    flanneld sends it from flannel0's own address, which the kernel drops as a martian (a local
    source arriving on an interface); the caller passes the unreachable subnet's first address,
    which is not local and routes back through flannel0, so the sender does get the error."""
    header_length = (offender[0] & 0x0F) * 4
    if header_length < 20 or header_length >= 60 or length < header_length + 8:
        return None
    if offender[9] == socket.IPPROTO_ICMP or (offender[6] << 8 | offender[7]) & 0x1FFF:
        return None
    quoted = bytes(offender[:header_length + 8])
    icmp = bytearray(struct.pack("!BBHI", 3, 0, 0, 0) + quoted)
    struct.pack_into("!H", icmp, 2, ipv4_checksum(icmp))
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, ICMP_TTL,
                                   socket.IPPROTO_ICMP, 0, source, bytes(offender[12:16])))
    struct.pack_into("!H", header, 10, ipv4_checksum(header))
    return bytes(header + icmp)
