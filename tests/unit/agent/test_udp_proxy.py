"""The udp data plane's pure packet logic: checksums, TTL, ICMP errors, route tables."""

import socket
import struct

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends import udp_packets


def slow_checksum(data):
    data = bytes(data) + b"\0" * (len(data) % 2)
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def header(ttl=64, protocol=17, source="10.10.16.2", destination="10.20.0.2", fragment=0x4000):
    data = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 7, fragment, ttl, protocol, 0,
                                 socket.inet_aton(source), socket.inet_aton(destination)) + b"\x12\x34\x00\x09\x00\x08\x00\x00")
    struct.pack_into("!H", data, 10, slow_checksum(data[:20]))
    return data


def test_checksum_matches_the_word_by_word_sum():
    for data in (b"\x45\x00", b"\xff\xff\xff", bytes(range(256)) * 5, b"\x01"):
        fast, slow = udp_packets.ipv4_checksum(data), slow_checksum(data)
        assert fast == slow or {fast, slow} == {0, 0xFFFF}  # the two one's-complement zeros
    assert udp_packets.ipv4_checksum(bytes(range(40))) == slow_checksum(bytes(range(40)))


def test_ttl_decrement_keeps_the_header_checksum_valid_and_drops_at_zero():
    for ttl in (64, 2, 255, 128):
        packet = header(ttl=ttl)
        assert udp_packets.decrement_ttl(packet)
        assert packet[8] == ttl - 1 and slow_checksum(packet[:20]) == 0
    assert not udp_packets.decrement_ttl(header(ttl=1)) and not udp_packets.decrement_ttl(header(ttl=0))


def test_net_unreachable_quotes_the_offender_and_skips_icmp_and_fragments():
    offender = header()
    reply = udp_packets.net_unreachable(offender, len(offender), socket.inet_aton("10.20.0.0"))
    assert slow_checksum(reply[:20]) == 0 and slow_checksum(reply[20:]) == 0
    assert (reply[8], reply[9], reply[20], reply[21]) == (8, socket.IPPROTO_ICMP, 3, 0)
    assert socket.inet_ntoa(reply[12:16]) == "10.20.0.0" and socket.inet_ntoa(reply[16:20]) == "10.10.16.2"
    assert reply[28:] == bytes(offender[:28]) and struct.unpack("!H", reply[2:4])[0] == len(reply)
    assert udp_packets.net_unreachable(header(protocol=1), 28, b"\0" * 4) is None
    assert udp_packets.net_unreachable(header(fragment=0x0010), 28, b"\0" * 4) is None
    assert udp_packets.net_unreachable(header(), 24, b"\0" * 4) is None  # too short to quote


def test_route_table_round_trip_longest_prefix_first():
    message = udp_packets.pack_routes([(0x0A140000, 20, 0xAC1FFA0C, 8285), (0x0A000000, 16, 0xAC1FFA0D, 7890)])
    tables = udp_packets.unpack_routes(message)
    assert tables == [(0xFFFFF000, {0x0A140000: ("172.31.250.12", 8285)}),
                      (0xFFFF0000, {0x0A000000: ("172.31.250.13", 7890)})]
    assert udp_packets.unpack_routes(udp_packets.pack_routes([])) == []


def test_counter_block_sums_the_workers_rows():
    block = udp_packets.CounterBlock(2)
    block.write(0, list(range(len(udp_packets.COUNTERS))))
    block.write(1, [1] * len(udp_packets.COUNTERS))
    totals = block.totals()
    assert totals["tun_rx"] == 1 and totals["no_route"] == 5 and set(totals) == set(udp_packets.COUNTERS)
