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

import errno
import os
import select
import socket
import struct

from .udp_packets import (COMMAND_ROUTES, COMMAND_STOP, COUNTERS, decrement_ttl, ipv4_checksum, net_unreachable,
                          unpack_routes)

BATCH = 64  # packets (or coalesced receives) taken from one side before looking at the other
BUFFER_SIZE = 65536
SOL_UDP = 17
UDP_SEGMENT = 103  # sendmsg: split this buffer into datagrams of this size (Linux 4.18)
UDP_GRO = 104  # receive consecutive datagrams of one flow in one read, with their size (Linux 5.0)
GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
MAX_SEGMENTS = 64
GSO_LIMIT = 65000  # bytes per UDP_SEGMENT send, below the 65507 a UDP payload may have
SLOT_SIZE = 65536 + 16  # one TUN read: the largest IP packet and its virtio-net header
VNET_HEADER_SIZE = 10  # struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
NO_VNET_HEADER = bytes(VNET_HEADER_SIZE)
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_TCPV4 = 1
TCP_ACK, TCP_PSH = 0x10, 0x08
TCP_MERGEABLE = frozenset((TCP_ACK, TCP_ACK | TCP_PSH))
# Header bytes that consecutive segments of one TCP connection share: version and header length,
# TOS, IP flags and fragment offset, TTL, protocol, addresses, ports, ack number, data offset.
SAME_IN_EVERY_SEGMENT = (0, 1, 6, 7, 8, 9) + tuple(range(12, 24)) + tuple(range(28, 33))


class Worker:
    """One forwarding loop: `tun_fd` (a TUN queue opened with IFF_VNET_HDR), `sock` (the bound UDP
    socket), `control` (the agent's end of a SOCK_SEQPACKET pair), network = (address int, mask
    int), subnet_mask (the mask of SubnetLen).

    Batching, invisible on the wire: packets read from the TUN queue for one peer, of one size
    (the last may be shorter), leave in one sendmsg with UDP_SEGMENT, which the kernel splits into
    one datagram per packet; datagrams that arrive coalesced (UDP_GRO) and are consecutive
    segments of one TCP connection are written to the TUN queue as one TCP super-packet (a
    virtio-net header asks the kernel to segment and checksum it when it has to)."""

    def __init__(self, tun_fd, sock, control, network, subnet_mask, counters, slot):
        self.tun_fd = tun_fd
        self.sock = sock
        self.control = control
        self.network_address, self.network_mask = network
        self.subnet_mask = subnet_mask
        self.counter_block, self.slot = counters, slot
        self.counts = [0] * len(COUNTERS)
        self.tables = []
        self.running = True
        # TUN -> UDP: packet k of a batch is read into slot k of `out` (its virtio-net header first);
        # pages of a slot beyond the first packet-sized part are never touched.
        self.tun = os.fdopen(tun_fd, "rb", buffering=0, closefd=False)  # readinto: no allocation
        self.out = bytearray(SLOT_SIZE * MAX_SEGMENTS)
        self.out_view = memoryview(self.out)
        self.slots = [self.out_view[slot * SLOT_SIZE:(slot + 1) * SLOT_SIZE] for slot in range(MAX_SEGMENTS)]
        self.packet_views = {}
        self.segmentation = True  # UDP_SEGMENT, until the kernel refuses it
        # UDP -> TUN: one (possibly coalesced) receive into `inbound`, super-packets built in `merged`.
        self.inbound = bytearray(BUFFER_SIZE)
        self.inbound_view = memoryview(self.inbound)
        self.merged = bytearray(VNET_HEADER_SIZE + BUFFER_SIZE)
        self.merged_view = memoryview(self.merged)

    def run(self):
        os.set_blocking(self.tun_fd, False)
        self.sock.setblocking(False)
        try:
            self.sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        except OSError:  # a kernel before 5.0: datagrams come one by one, which works too
            pass
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

    # -- TUN -> UDP ------------------------------------------------------------------------------

    def _tun_to_udp(self):
        out, view, counts, slots = self.out, self.out_view, self.counts, self.slots
        readinto = self.tun.readinto
        count = size = last = 0  # the batch: `count` slots, packets of `size` bytes (the last `last`)
        limit = MAX_SEGMENTS
        peer = None
        busy = False
        for _packet in range(BATCH):
            length = readinto(slots[count])
            if length is None:  # nothing more to read
                break
            busy = True
            counts[0] += 1
            length -= VNET_HEADER_SIZE
            base = count * SLOT_SIZE + VNET_HEADER_SIZE
            if length < 20 or out[base] >> 4 != 4:
                counts[7] += 1
                continue
            destination = (out[base + 16] << 24) | (out[base + 17] << 16) | (out[base + 18] << 8) | out[base + 19]
            target = self._lookup(destination)
            if target is None:
                counts[4] += 1
                reply = net_unreachable(view[base:base + length], length,
                                        struct.pack("!I", destination & self.subnet_mask))
                if reply is not None:
                    self._write_tun(NO_VNET_HEADER + reply)
                    counts[5] += 1
                continue
            if not decrement_ttl(out, base):
                counts[6] += 1
                continue
            if count and (target != peer or length > size):
                self._send(count, size, last, peer)  # this packet starts the next batch, in slot 0
                out[VNET_HEADER_SIZE:VNET_HEADER_SIZE + length] = view[base:base + length]
                count = 0
            if not count:
                peer, size = target, length
                limit = min(MAX_SEGMENTS, GSO_LIMIT // size)
            count += 1
            last = length
            if length < size or count == limit:
                self._send(count, size, last, peer)
                count = 0
        if count:
            self._send(count, size, last, peer)
        return busy

    def _packets(self, count, size, last):
        """The buffers of a batch's packets (slot k holds one at k * SLOT_SIZE + header)."""
        views = self.packet_views.get(size)
        if views is None:
            if len(self.packet_views) >= 8:
                self.packet_views.clear()
            views = self.packet_views[size] = [
                self.out_view[slot * SLOT_SIZE + VNET_HEADER_SIZE:slot * SLOT_SIZE + VNET_HEADER_SIZE + size]
                for slot in range(MAX_SEGMENTS)]
        if last == size:
            return views[:count]
        start = (count - 1) * SLOT_SIZE + VNET_HEADER_SIZE
        return views[:count - 1] + [self.out_view[start:start + last]]

    def _send(self, count, size, last, peer):
        try:
            if count == 1:
                self.sock.sendto(self.out_view[VNET_HEADER_SIZE:VNET_HEADER_SIZE + last], peer)
            elif self.segmentation:
                self.sock.sendmsg(self._packets(count, size, last),
                                  [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, peer)
            else:
                for packet in self._packets(count, size, last):
                    self.sock.sendto(packet, peer)
            self.counts[1] += count
        except OSError as error:
            # A kernel without UDP_SEGMENT (before 4.18), or one that refuses it on an interface
            # without checksum offload (EIO; 6.18 segments in software instead): send packet by
            # packet from now on.
            if count > 1 and self.segmentation and error.errno in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT,
                                                                   errno.EOPNOTSUPP):
                self.segmentation = False
                self._send(count, size, last, peer)
            else:
                self.counts[10] += count

    # -- UDP -> TUN ------------------------------------------------------------------------------

    def _udp_to_tun(self):
        buf, view, counts = self.inbound, self.inbound_view, self.counts
        address, mask = self.network_address, self.network_mask
        recvmsg_into = self.sock.recvmsg_into
        busy = False
        for _receive in range(BATCH):
            try:
                length, ancillary, _flags, _source = recvmsg_into([view], GRO_CMSG_SPACE)
            except BlockingIOError:
                break
            busy = True
            if not length:  # an empty datagram
                counts[2] += 1
                counts[8] += 1
                continue
            size = length
            for level, kind, data in ancillary:
                if level == SOL_UDP and kind == UDP_GRO:
                    size = struct.unpack("=i", data[:4])[0]
            if length > size and self._merge_all(length, size):
                continue
            # The run of TCP segments being merged: the first at buf[first:first_end], its header
            # length, the sequence number the next must carry, and its payload size (0: closed).
            first = first_end = header_length = seq = payload_size = 0
            segments = 0
            merged = VNET_HEADER_SIZE
            out = self.merged
            for offset in range(0, length, size):
                end = offset + size if offset + size < length else length
                counts[2] += 1
                if segments and payload_size:
                    payload = end - offset - header_length
                    # The next segment of the run: same addresses, ports, ack, options, IP flags,
                    # TTL and TOS; only ACK (PSH on the last); full size except the last.
                    if (0 < payload <= payload_size and buf[offset + 33] in TCP_MERGEABLE
                            and (buf[offset + 24] << 24 | buf[offset + 25] << 16 | buf[offset + 26] << 8
                                 | buf[offset + 27]) == seq
                            and view[offset + 12:offset + 24] == view[first + 12:first + 24]
                            and view[offset + 28:offset + 33] == view[first + 28:first + 33]
                            and view[offset + 38:offset + header_length] == view[first + 38:first + header_length]
                            and view[offset:offset + 2] == view[first:first + 2]
                            and view[offset + 6:offset + 10] == view[first + 6:first + 10]):
                        if segments == 1:
                            merged = VNET_HEADER_SIZE + first_end - first
                            out[VNET_HEADER_SIZE:merged] = view[first:first_end]
                        out[merged:merged + payload] = view[offset + header_length:end]
                        merged += payload
                        segments += 1
                        seq = (seq + payload) & 0xFFFFFFFF
                        out[VNET_HEADER_SIZE + 33] = buf[offset + 33]
                        if payload < payload_size or buf[offset + 33] != TCP_ACK:
                            payload_size = 0  # a short or pushed segment closes the run
                        continue
                if segments:
                    self._flush(first, first_end, header_length, segments, merged)
                    segments = 0
                if end - offset < 20 or buf[offset] & 0xF0 != 0x40 or buf[offset] & 0x0F < 5:
                    counts[8] += 1
                    continue
                if ((buf[offset + 16] << 24) | (buf[offset + 17] << 16) | (buf[offset + 18] << 8)
                        | buf[offset + 19]) & mask != address:
                    counts[9] += 1
                    continue
                if buf[offset + 8] <= 1:
                    counts[6] += 1
                    continue
                if buf[offset] == 0x45 and buf[offset + 9] == 6 and end - offset >= 40 \
                        and buf[offset + 33] == TCP_ACK and not buf[offset + 6] & 0x3F and not buf[offset + 7]:
                    header_length = 20 + (buf[offset + 32] >> 4) * 4
                    payload_size = end - offset - header_length
                    if payload_size > 0:  # a data segment: it may start a run
                        first, first_end, segments = offset, end, 1
                        seq = (int.from_bytes(view[offset + 24:offset + 28], "big") + payload_size) & 0xFFFFFFFF
                        continue
                decrement_ttl(buf, offset)
                self._write_tun_from(offset, end)
            if segments:
                self._flush(first, first_end, header_length, segments, merged)
        return busy

    def _merge_all(self, length, size):
        """The common case at C speed: every datagram of one receive is the next segment of one
        TCP connection. Checked column by column (one byte of every header at a time, with
        strided slices), then written as one super-packet gathered from the payloads; False
        (nothing done) when any datagram is not, and the loop of _udp_to_tun takes them one by one."""
        buf, counts = self.inbound, self.counts
        segments = (length + size - 1) // size
        last = length - (segments - 1) * size
        if size < 41 or last < 41 or buf[0] != 0x45 or buf[9] != 6 or buf[6] & 0x3F or buf[7] or buf[8] <= 1:
            return False
        header_length = 20 + (buf[32] >> 4) * 4
        payload = size - header_length
        if header_length < 40 or payload <= 0 or last <= header_length:
            return False
        if ((buf[16] << 24) | (buf[17] << 16) | (buf[18] << 8) | buf[19]) & self.network_mask != self.network_address:
            return False
        full = length - last  # the full-size datagrams, all but the last
        for position in SAME_IN_EVERY_SEGMENT:
            if buf[position:length:size].count(buf[position]) != segments:
                return False
        for position in range(38, header_length):  # urgent pointer and options
            if buf[position:length:size].count(buf[position]) != segments:
                return False
        if (buf[33:full:size].count(TCP_ACK) != segments - 1 or buf[full + 33] not in TCP_MERGEABLE
                or buf[2:full:size].count(size >> 8) != segments - 1
                or buf[3:full:size].count(size & 0xFF) != segments - 1
                or (buf[full + 2] << 8 | buf[full + 3]) != last):
            return False
        seq = int.from_bytes(self.inbound_view[24:28], "big")
        expected = struct.pack("!%dI" % segments, *[(seq + k * payload) & 0xFFFFFFFF for k in range(segments)])
        for byte in range(4):
            if buf[24 + byte:length:size] != expected[byte::4]:
                return False
        counts[2] += segments
        view = self.inbound_view
        header = self.merged
        header[VNET_HEADER_SIZE:VNET_HEADER_SIZE + header_length] = view[:header_length]
        header[VNET_HEADER_SIZE + 33] = buf[full + 33]  # PSH of the last segment
        total = header_length + payload * (segments - 1) + last - header_length
        self._finish_super_packet(total, header_length, payload)
        parts = [self.merged_view[:VNET_HEADER_SIZE + header_length]]
        parts.extend([view[start + header_length:start + size] for start in range(0, full, size)])
        parts.append(view[full + header_length:length])
        try:
            os.writev(self.tun_fd, parts)
            counts[3] += segments
        except OSError:
            counts[10] += 1
        return True

    def _finish_super_packet(self, total, header_length, payload_size):
        """Patch the merged header in self.merged (total length, TTL, checksums) and put the
        virtio-net header before it."""
        out = self.merged
        ip = VNET_HEADER_SIZE
        struct.pack_into("!H", out, ip + 2, total)
        out[ip + 8] -= 1  # TTL, as flanneld's proxy (checked above 1 before)
        out[ip + 10] = out[ip + 11] = 0
        struct.pack_into("!H", out, ip + 10, ipv4_checksum(self.merged_view[ip:ip + 20]))
        # The TCP checksum field holds the pseudo-header sum; the kernel completes it (NEEDS_CSUM).
        words = struct.unpack_from("!HHHH", out, ip + 12)
        pseudo = sum(words) + 6 + total - 20
        pseudo = (pseudo & 0xFFFF) + (pseudo >> 16)
        struct.pack_into("!H", out, ip + 36, (pseudo & 0xFFFF) + (pseudo >> 16))
        struct.pack_into("<BBHHHH", out, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
                         header_length, payload_size, 20, 16)

    def _flush(self, first, first_end, header_length, segments, merged):
        """Write a run: one segment as it came, several as one TCP super-packet."""
        if segments == 1:
            decrement_ttl(self.inbound, first)
            self._write_tun_from(first, first_end)
            return
        self._finish_super_packet(merged - VNET_HEADER_SIZE, header_length, first_end - first - header_length)
        if self._write_tun(self.merged_view[:merged]):
            self.counts[3] += segments

    def _write_tun_from(self, offset, end):
        try:
            os.writev(self.tun_fd, [NO_VNET_HEADER, self.inbound_view[offset:end]])
            self.counts[3] += 1
        except OSError:
            self.counts[10] += 1

    def _write_tun(self, packet):
        """Write a packet that already starts with its virtio-net header."""
        try:
            os.write(self.tun_fd, packet)
            return True
        except OSError:  # a full queue or a packet the kernel refuses: count and go on
            self.counts[10] += 1
            return False
