"""The udp backend's data plane: a worker process moving IP packets between a TUN queue and a UDP
socket, with flanneld's wire format (each IP packet is the whole UDP payload, nothing added).

As flanneld's C proxy: TTL decremented both ways (packets reaching 0 are dropped), an ICMP
net-unreachable back to the sender for a destination with no lease. Stricter: a UDP payload that
is short, not IPv4, or addressed outside the flannel Network is dropped (the C proxy writes it to
the TUN device as is). Every drop is counted in a shared counter block the agent reads.

Routes come from the agent over a SOCK_SEQPACKET socket as whole tables (see pack_routes), so a
peer change is one message read between two batches: it never stalls forwarding, and forwarding
never waits for the agent or etcd.
"""

import mmap
import os
import select
import socket
import struct

ROUTE = struct.Struct("!IBIH")  # subnet, prefix length, peer PublicIP, peer port
COMMAND_ROUTES = b"R"
COMMAND_STOP = b"S"
BATCH = 64  # packets read from one side before looking at the other
BUFFER_SIZE = 65536
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


def decrement_ttl(buf):
    """TTL - 1 with the header checksum patched (RFC 1624); False when the packet must die."""
    ttl = buf[8]
    if ttl <= 1:
        return False
    buf[8] = ttl - 1
    check = ((buf[10] << 8) | buf[11]) + 0x100
    check = (check & 0xFFFF) + (check >> 16)
    buf[10] = check >> 8
    buf[11] = check & 0xFF
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


class Worker:
    """One forwarding loop: `tun_fd` (a TUN queue), `sock` (the bound UDP socket), `control`
    (the agent's end of a SOCK_SEQPACKET pair), network = (address int, mask int), subnet_mask
    (the mask of SubnetLen)."""

    def __init__(self, tun_fd, sock, control, network, subnet_mask, counters, slot):
        self.tun_fd = tun_fd
        self.tun = os.fdopen(tun_fd, "rb", buffering=0, closefd=False)  # readinto: no allocation
        self.sock = sock
        self.control = control
        self.network_address, self.network_mask = network
        self.subnet_mask = subnet_mask
        self.counter_block, self.slot = counters, slot
        self.counts = [0] * len(COUNTERS)
        self.tables = []
        self.running = True
        self.buffer = bytearray(BUFFER_SIZE)
        self.view = memoryview(self.buffer)

    def run(self):
        os.set_blocking(self.tun_fd, False)
        self.sock.setblocking(False)
        poller = select.poll()
        for fd in (self.tun_fd, self.sock.fileno(), self.control.fileno()):
            poller.register(fd, select.POLLIN)
        control_fd = self.control.fileno()
        while self.running:
            for fd, _events in poller.poll():
                if fd == control_fd:
                    self._command()
            busy = True
            while busy and self.running:
                busy = self._tun_to_udp() | self._udp_to_tun()
            self.counter_block.write(self.slot, self.counts)

    def _command(self):
        message = self.control.recv(1 << 20)
        if not message or message[:1] == COMMAND_STOP:
            self.running = False  # an empty read: the agent is gone
        elif message[:1] == COMMAND_ROUTES:
            self.tables = unpack_routes(message)

    def _lookup(self, destination):
        for mask, table in self.tables:
            peer = table.get(destination & mask)
            if peer is not None:
                return peer
        return None

    def _tun_to_udp(self):
        buf, view, counts = self.buffer, self.view, self.counts
        readinto, sendto = self.tun.readinto, self.sock.sendto
        for _packet in range(BATCH):
            length = readinto(buf)
            if not length:
                return False
            counts[0] += 1
            if length < 20 or buf[0] >> 4 != 4:
                counts[7] += 1
                continue
            destination = (buf[16] << 24) | (buf[17] << 16) | (buf[18] << 8) | buf[19]
            peer = self._lookup(destination)
            if peer is None:
                counts[4] += 1
                reply = net_unreachable(buf, length, struct.pack("!I", destination & self.subnet_mask))
                if reply is not None:
                    self._write_tun(reply)
                    counts[5] += 1
                continue
            if not decrement_ttl(buf):
                counts[6] += 1
                continue
            try:
                sendto(view[:length], peer)
                counts[1] += 1
            except OSError:
                counts[10] += 1
        return True

    def _udp_to_tun(self):
        buf, view, counts = self.buffer, self.view, self.counts
        recv_into = self.sock.recv_into
        address, mask = self.network_address, self.network_mask
        for _packet in range(BATCH):
            try:
                length = recv_into(buf)
            except BlockingIOError:
                return False
            counts[2] += 1
            if length < 20 or buf[0] & 0xF0 != 0x40 or buf[0] & 0x0F < 5:
                counts[8] += 1
                continue
            if ((buf[16] << 24) | (buf[17] << 16) | (buf[18] << 8) | buf[19]) & mask != address:
                counts[9] += 1
                continue
            if not decrement_ttl(buf):
                counts[6] += 1
                continue
            if self._write_tun(view[:length]):
                counts[3] += 1
        return True

    def _write_tun(self, packet):
        try:
            os.write(self.tun_fd, packet)
            return True
        except OSError:  # a full queue or a packet the kernel refuses: count and go on
            self.counts[10] += 1
            return False
