"""One ethtool feature of a device, read and set with the SIOCETHTOOL ioctl (as `ethtool -k/-K`
does). pyroute2's Ethtool would do the same through generic netlink and ctypes, and cost the
agent 0.75 MB of resident memory for this one bit (BENCHMARKS.md, issue 20)."""

import array
import fcntl
import socket
import struct

SIOCETHTOOL = 0x8946
ETHTOOL_GSTRINGS, ETHTOOL_GSSET_INFO, ETHTOOL_GFEATURES, ETHTOOL_SFEATURES = 0x1B, 0x37, 0x3A, 0x3B
ETH_SS_FEATURES = 4
ETH_GSTRING_LEN = 32
_IFREQ = struct.Struct("16sP16x")  # ifr_name, ifr_data (a pointer to the command's buffer), the union's rest


def _ioctl(ifname, buffer):
    """Run the ethtool command in `buffer` (an array of bytes, answered in place) on `ifname`."""
    request = _IFREQ.pack(ifname.encode(), buffer.buffer_info()[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request)


def _feature_bit(ifname, feature):
    """(the number of features, the bit of `feature`) for `ifname`; the bit is None when the
    kernel has no feature of that name."""
    info = array.array("B", struct.pack("=IIQI", ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_FEATURES, 0))
    _ioctl(ifname, info)
    count = struct.unpack_from("=I", info, 16)[0]
    strings = array.array("B", struct.pack("=III", ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count)
                          + bytes(count * ETH_GSTRING_LEN))
    _ioctl(ifname, strings)
    names = bytes(strings[12:])
    for bit in range(count):
        if names[bit * ETH_GSTRING_LEN:(bit + 1) * ETH_GSTRING_LEN].split(b"\0", 1)[0].decode() == feature:
            return count, bit
    return count, None


def set_feature(ifname, feature, enabled):
    """Turn `feature` (e.g. tx-checksum-ip-generic) of `ifname` on or off, writing only that bit
    (the kernel then brings back what depends on it when it is turned on again). Returns True
    when it changed something; False when it was so already or the kernel has no such feature."""
    count, bit = _feature_bit(ifname, feature)
    if bit is None:
        return False
    blocks = (count + 31) // 32
    state = array.array("B", struct.pack("=II", ETHTOOL_GFEATURES, blocks) + bytes(16 * blocks))
    _ioctl(ifname, state)
    active = struct.unpack_from("=I", state, 8 + 16 * (bit // 32) + 8)[0]  # available, requested, active
    mask = 1 << (bit % 32)
    if bool(active & mask) == bool(enabled):
        return False
    change = bytearray(struct.pack("=II", ETHTOOL_SFEATURES, blocks) + bytes(8 * blocks))
    struct.pack_into("=II", change, 8 + 8 * (bit // 32), mask, mask if enabled else 0)  # valid, requested
    _ioctl(ifname, array.array("B", bytes(change)))
    return True
