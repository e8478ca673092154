"""Reading the pcap stream `tcpdump -w -` writes (Ethernet link type): tests check what crossed a wire."""

import struct

FILE_HEADER = 24  # pcap's global header
RECORD_HEADER = 16  # per packet: seconds, microseconds, captured length, original length


def ip_packets(pcap):
    """The IPv4 packets (bytes, from the IP header on) of a pcap (Ethernet) stream, in order."""
    packets, offset = [], FILE_HEADER
    while offset + RECORD_HEADER <= len(pcap):
        length = struct.unpack("<I", pcap[offset + 8:offset + 12])[0]
        frame = pcap[offset + RECORD_HEADER:offset + RECORD_HEADER + length]
        offset += RECORD_HEADER + length
        if frame[12:14] == b"\x08\x00":
            packets.append(frame[14:])
    return packets
