"""Capture VXLAN frames on the lab bridge while a command (a cross-host ping) runs; report them.

Usage: python3 vxlan_capture.py --interface BRIDGE --port 8472 --count N --timeout S -- COMMAND...

Runs `timeout S tcpdump -i BRIDGE -nn -U -c N -w FILE udp port PORT`, waits until tcpdump listens,
runs COMMAND, waits for tcpdump to finish (N frames or S seconds), then decodes the pcap itself:
Ethernet / IPv4 / UDP / the 8-byte VXLAN header (byte 0 flags, I = 0x08; bytes 4-6 the VNI) /
inner Ethernet / inner IPv4 / ICMP. No dependency on how a tcpdump version names the port (VXLAN
or OTV); tcpdump's own decoding is added for the reader. Prints one JSON object:
  {"interface", "port", "command_rc", "command_output", "frames": [{"src", "dst", "sport",
   "dport", "flags", "vni", "inner_src", "inner_dst", "inner_proto", "icmp_type"}], "tcpdump": [lines]}
Exit status 0 unless tcpdump could not run; the caller asserts on the frames.
"""

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",  # microsecond timestamps
              b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}  # nanosecond timestamps
LINKTYPE_ETHERNET = 1
ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100
IPPROTO_ICMP = 1
IPPROTO_UDP = 17


def read_pcap(data):
    """Yield the packets (bytes) of a classic pcap file of Ethernet frames."""
    if len(data) < 24 or data[:4] not in PCAP_MAGIC:
        raise ValueError("not a pcap file")
    order = PCAP_MAGIC[data[:4]]
    linktype = struct.unpack(order + "I", data[20:24])[0]
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError("link type %d is not Ethernet" % linktype)
    offset = 24
    while offset + 16 <= len(data):
        incl_len = struct.unpack(order + "I", data[offset + 8:offset + 12])[0]
        yield data[offset + 16:offset + 16 + incl_len]
        offset += 16 + incl_len


def ethernet_payload(frame):
    """(ethertype, payload) of an Ethernet frame, skipping one 802.1Q tag."""
    if len(frame) < 14:
        return None, b""
    ethertype = struct.unpack("!H", frame[12:14])[0]
    payload = frame[14:]
    if ethertype == ETH_P_8021Q and len(payload) >= 4:
        ethertype = struct.unpack("!H", payload[2:4])[0]
        payload = payload[4:]
    return ethertype, payload


def ipv4(packet):
    """(src, dst, proto, payload) of an IPv4 packet, or None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header_len = (packet[0] & 0x0F) * 4
    total_len = struct.unpack("!H", packet[2:4])[0]
    return (socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20]), packet[9],
            packet[header_len:total_len])


def decode(frame, port):
    """The VXLAN facts of one captured frame, or None when it is not VXLAN on `port`."""
    ethertype, payload = ethernet_payload(frame)
    outer = ipv4(payload) if ethertype == ETH_P_IP else None
    if outer is None or outer[2] != IPPROTO_UDP or len(outer[3]) < 16:
        return None
    sport, dport = struct.unpack("!HH", outer[3][:4])
    if port not in (sport, dport):
        return None
    vxlan = outer[3][8:16]
    record = {"src": outer[0], "dst": outer[1], "sport": sport, "dport": dport,
              "flags": vxlan[0], "vni": int.from_bytes(vxlan[4:7], "big"),
              "inner_src": None, "inner_dst": None, "inner_proto": None, "icmp_type": None}
    inner_type, inner_payload = ethernet_payload(outer[3][16:])
    inner = ipv4(inner_payload) if inner_type == ETH_P_IP else None
    if inner is not None:
        record.update(inner_src=inner[0], inner_dst=inner[1], inner_proto=inner[2])
        if inner[2] == IPPROTO_ICMP and inner[3]:
            record["icmp_type"] = inner[3][0]
    return record


def capture(args):
    handle, pcap = tempfile.mkstemp(prefix="netlab-vxlan-", suffix=".pcap")
    os.close(handle)
    tcpdump = subprocess.Popen(
        ["timeout", str(args.timeout), "tcpdump", "-i", args.interface, "-nn", "-U", "-c", str(args.count),
         "-w", pcap, "udp", "port", str(args.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # tcpdump announces "listening on IFACE" once its filter is installed.
        listening = tcpdump.stderr.readline()
        if "listening on" not in listening:
            tcpdump.wait(10)
            sys.stderr.write("tcpdump did not start: %s%s" % (listening, tcpdump.stderr.read()))
            return 1
        command = subprocess.run(args.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, check=False, timeout=args.timeout)
        deadline = time.monotonic() + args.timeout
        while tcpdump.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if tcpdump.poll() is None:
            tcpdump.kill()
        tcpdump.wait(10)
        with open(pcap, "rb") as stream:
            data = stream.read()
        frames = [record for record in map(lambda frame: decode(frame, args.port), read_pcap(data))
                  if record is not None]
        decoded = subprocess.run(["tcpdump", "-r", pcap, "-nn"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, check=False)
        json.dump({"interface": args.interface, "port": args.port, "command_rc": command.returncode,
                   "command_output": command.stdout.splitlines(), "frames": frames,
                   "tcpdump": decoded.stdout.splitlines()}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    finally:
        if tcpdump.poll() is None:
            tcpdump.kill()
            tcpdump.wait(10)
        os.unlink(pcap)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interface", required=True)
    parser.add_argument("--port", type=int, default=8472)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--timeout", type=int, default=30)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("a command to run during the capture is required")
    return capture(args)


if __name__ == "__main__":
    sys.exit(main())
