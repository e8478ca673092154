"""Kernel notifications as small typed events: links, addresses, neighbours, bridge FDB entries
(AF_BRIDGE neighbours) and main-table routes, IPv4 and IPv6 alike.

KernelEvents is a plain netlink socket bound to the rtnetlink multicast groups: fileno() for a
select, read() drains what is queued without blocking. The few fields the agent reads are taken
with struct (pyroute2's decoding of every announcement, the agent's own included, was most of
the kernel-events thread's CPU per lease event). It owns no state of the agent's;
kernel_repairs.py compares the events with what the agent owns. The agent's own changes are
announced too (the kernel tells every listener): while a netlink.Batch sends, a socket filter
(classic BPF, see own_changes_filter) has the kernel drop the announcements of that send, so the
kernel-events thread does not even wake for them; any other announcement of an entry the agent
wrote (a sync's, a restore's) is told apart by comparing it with the wanted entry, not by asking
the kernel again.
"""

import collections
import ctypes
import errno
import select
import socket
import struct

from . import AF_BRIDGE, IFF_UP, MAIN_TABLE, NUD_PERMANENT, RTNH_F_ONLINK
from .entries import Route

# rtnetlink multicast groups (the legacy bit masks bind() takes).
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4  # neighbours of every family and, with family AF_BRIDGE, FDB entries
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
# A dual-stack backend's repairs also follow the IPv6 addresses and routes.
GROUPS_IPV6 = GROUPS | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
RTN_UNICAST = 1
# A burst (a device with 169 peers deleted) must not overflow the queue; only touched pages count.
RECEIVE_BUFFER = 4 << 20
RECEIVE_SIZE = 1 << 16  # one datagram: the kernel sends each notification in one of its own

LinkEvent = collections.namedtuple("LinkEvent", "removed index name mtu up mac")
AddressEvent = collections.namedtuple("AddressEvent", "removed index address prefixlen")
NeighbourEvent = collections.namedtuple("NeighbourEvent", "removed index ip mac permanent")
FdbEvent = collections.namedtuple("FdbEvent", "removed index mac dst")
RouteEvent = collections.namedtuple("RouteEvent", "removed route metric")  # route: entries.Route
# The kernel dropped notifications (the queue overflowed): only a full reconcile knows the state.
Overflow = collections.namedtuple("Overflow", "")


# Fixed parts of the messages after the 16-byte nlmsghdr (linux/rtnetlink.h, if_addr.h, neighbour.h).
_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_ATTR = struct.Struct("=HH")  # length, type
_U32 = struct.Struct("=I")
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU = 1, 3, 4
IFA_ADDRESS, IFA_LOCAL = 1, 2
NDA_DST, NDA_LLADDR = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
NLA_TYPE_MASK = 0x3FFF  # without the nested and byte-order flags
# A classic BPF socket filter (linux/filter.h), run by the kernel on each notification before it
# is queued on the socket: instructions (code, jump if true, jump if false, constant); absolute
# loads read big-endian, and one past the message's end drops it (so lengths are checked first).
SO_ATTACH_FILTER, SO_DETACH_FILTER = 26, 27
_INSTRUCTION = struct.Struct("=HBBI")
_LOAD_WORD, _LOAD_HALF, _LOAD_BYTE, _LOAD_LENGTH = 0x20, 0x28, 0x30, 0x80
_JUMP_EQUAL, _JUMP_AT_LEAST, _RETURN = 0x15, 0x35, 0x06
_KEEP, _DROP = 0xFFFFFFFF, 0
_PORT_READ = struct.Struct(">I")  # the header's port id as the load at offset 12 reads it
# The vxlan driver's FDB notification starts with the header, the ndmsg, NDA_LLADDR (6 bytes,
# padded) and NDA_DST (an IPv4 address, or an IPv6 one on flannel-v6.<VNI>); the loads comparing
# its type, family, ifindex, NDA_LLADDR's header, MAC (4 and 2 bytes), NDA_DST's header and
# address (a word at a time), and those fields read as the loads read them; by address size.
_FDB_HEAD_LOADS = ((_LOAD_HALF, 4), (_LOAD_BYTE, 16), (_LOAD_WORD, 20), (_LOAD_WORD, 28), (_LOAD_WORD, 32),
                   (_LOAD_HALF, 36), (_LOAD_WORD, 40))
_FDB_ADDRESS_OFFSET = 44


def _attributes(data, offset, end):
    """{type: raw value} of the attributes between offset and end (the first of each type)."""
    found = {}
    while offset + 4 <= end:
        length, kind = _ATTR.unpack_from(data, offset)
        if length < 4:
            break
        found.setdefault(kind & NLA_TYPE_MASK, data[offset + 4:offset + length])
        offset += (length + 3) & ~3
    return found


def _ip(raw):
    if raw is None:
        return None
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def _mac(raw):
    return ":".join("%02x" % byte for byte in raw) if raw is not None else None


def _u32(raw):
    return _U32.unpack(raw[:4])[0] if raw is not None and len(raw) >= 4 else None


def _link(data, offset, end, removed):
    _family, _kind, index, flags, _change = _IFINFO.unpack_from(data, offset)
    attrs = _attributes(data, offset + _IFINFO.size, end)
    name = attrs.get(IFLA_IFNAME)
    return LinkEvent(removed, index, name.split(b"\0", 1)[0].decode("utf-8", "replace") if name is not None else None,
                     _u32(attrs.get(IFLA_MTU)), bool(flags & IFF_UP), _mac(attrs.get(IFLA_ADDRESS)))


def _address(data, offset, end, removed):
    family, prefixlen, _flags, _scope, index = _IFADDR.unpack_from(data, offset)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = _attributes(data, offset + _IFADDR.size, end)
    return AddressEvent(removed, index, _ip(attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)), prefixlen)


def _neighbour(data, offset, end, removed):
    family, index, state, _flags, _kind = _NDMSG.unpack_from(data, offset)
    if family not in (AF_BRIDGE, socket.AF_INET, socket.AF_INET6):
        return None
    attrs = _attributes(data, offset + _NDMSG.size, end)
    if family == AF_BRIDGE:
        if NDA_DST not in attrs:  # a local (bridge port) entry, never one of a vxlan device's remotes
            return None
        return FdbEvent(removed, index, _mac(attrs.get(NDA_LLADDR)), _ip(attrs[NDA_DST]))
    return NeighbourEvent(removed, index, _ip(attrs.get(NDA_DST)), _mac(attrs.get(NDA_LLADDR)),
                          bool(state & NUD_PERMANENT))


def _route(data, offset, end, removed):
    family, dst_len, _src_len, _tos, table, _protocol, _scope, kind, flags = _RTMSG.unpack_from(data, offset)
    if family not in (socket.AF_INET, socket.AF_INET6) or kind != RTN_UNICAST:
        return None
    attrs = _attributes(data, offset + _RTMSG.size, end)
    if (_u32(attrs.get(RTA_TABLE)) or table) != MAIN_TABLE:
        return None
    default = "::" if family == socket.AF_INET6 else "0.0.0.0"
    route = Route("%s/%d" % (_ip(attrs.get(RTA_DST)) or default, dst_len), _ip(attrs.get(RTA_GATEWAY)),
                  _u32(attrs.get(RTA_OIF)), bool(flags & RTNH_F_ONLINK))
    return RouteEvent(removed, route, _u32(attrs.get(RTA_PRIORITY)) or 0)


_PARSERS = {RTM_NEWLINK: (_link, False), RTM_DELLINK: (_link, True),
            RTM_NEWADDR: (_address, False), RTM_DELADDR: (_address, True),
            RTM_NEWNEIGH: (_neighbour, False), RTM_DELNEIGH: (_neighbour, True),
            RTM_NEWROUTE: (_route, False), RTM_DELROUTE: (_route, True)}


def parse(data):
    """The typed events of one datagram of notifications, in order; a message the agent never
    acts on is left out."""
    events, offset = [], 0
    while offset + _HEADER.size <= len(data):
        length, kind, _flags, _sequence, _port = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            break
        end = min(offset + length, len(data))
        parser = _PARSERS.get(kind)
        if parser is not None:
            function, removed = parser
            event = function(data, offset + _HEADER.size, end, removed)
            if event is not None:
                events.append(event)
        offset += (length + 3) & ~3
    return events


def _instructions(*code):
    return b"".join(_INSTRUCTION.pack(*instruction) for instruction in code)


# The parts of own_changes_filter's program that do not change: a message shorter than a header
# kept; the port's check (its value packed per port); the end.
_START = _instructions((_LOAD_LENGTH, 0, 0, 0), (_JUMP_AT_LEAST, 1, 0, _HEADER.size), (_RETURN, 0, 0, _KEEP))
_PORT_CHECK = struct.Struct("=" + "HBBI" * 3)
_END = _instructions((_RETURN, 0, 0, _KEEP))


class _FdbChecks:
    """The checks of one FDB entry with an address of `size` bytes (4, 16): each field loaded and
    compared in turn (a difference jumps past the entry's DROP, to the next entry), then DROP; its
    values filled in per entry. `guard`: before the entries of this size, a message too short
    for them is kept (the loads past its end would drop it)."""

    def __init__(self, size):
        loads = _FDB_HEAD_LOADS + tuple((_LOAD_WORD, _FDB_ADDRESS_OFFSET + offset) for offset in range(0, size, 4))
        jumps = tuple(2 * (len(loads) - 1 - position) + 1 for position in range(len(loads)))
        self.read = struct.Struct(">4xH10xB3xI4xIIH2xI" + "I" * (size // 4))
        self.guard = _instructions((_LOAD_LENGTH, 0, 0, 0), (_JUMP_AT_LEAST, 1, 0, _FDB_ADDRESS_OFFSET + size),
                                   (_RETURN, 0, 0, _KEEP))
        self.checks = struct.Struct("=" + "HBBI" * (2 * len(loads) + 1))
        self.template = [field for (load, offset), after in zip(loads, jumps)
                         for field in (load, 0, 0, offset, _JUMP_EQUAL, 0, after, None)] + [_RETURN, 0, 0, _DROP]
        self.positions = tuple(position for position, field in enumerate(self.template) if field is None)

    def entry(self, kind, index, mac, dst):
        announced = _HEADER.pack(_FDB_ADDRESS_OFFSET + len(dst), kind, 0, 0, 0) + \
            _NDMSG.pack(AF_BRIDGE, index, 0, 0, 0) + _ATTR.pack(10, NDA_LLADDR) + mac + b"\0\0" + \
            _ATTR.pack(4 + len(dst), NDA_DST) + dst
        fields = list(self.template)
        for position, value in zip(self.positions, self.read.unpack(announced)):
            fields[position] = value
        return self.checks.pack(*fields)


_FDB_CHECKS = {4: _FdbChecks(4), 16: _FdbChecks(16)}


def own_changes_filter(port, fdb=()):
    """A classic BPF program (bytes) dropping the notifications stamped with netlink port `port`
    (the kernel stamps a request's announcements with its sender's port) and the vxlan driver's
    FDB notifications listed in `fdb`, (type, ifindex, mac, dst) with the addresses as bytes, dst
    IPv4 or IPv6 (the driver stamps those with port 0). Every other notification is kept, a
    shorter one too. Packed from ready parts: it is built at every batch the agent sends."""
    program = [_START]
    if port:
        program.append(_PORT_CHECK.pack(_LOAD_WORD, 0, 0, 12, _JUMP_EQUAL, 0, 1, _PORT_READ.unpack(_U32.pack(port))[0],
                                        _RETURN, 0, 0, _DROP))
    for size, checks in sorted(_FDB_CHECKS.items()):  # IPv4's first: its guard is the shorter
        entries = [checks.entry(*entry) for entry in fdb if len(entry[3]) == size]
        if entries:
            program.append(checks.guard)
            program.extend(entries)
    program.append(_END)
    return b"".join(program)


class KernelEvents:
    """Notifications of the current network namespace, read without blocking."""

    def __init__(self, groups=GROUPS):
        self._socket = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            self._socket.bind((0, groups))
            self._socket.setblocking(False)
        except Exception:
            self._socket.close()
            raise

    def fileno(self):
        return self._socket.fileno()

    def wait(self, timeout):
        """Whether notifications are queued, waiting up to `timeout` seconds for one."""
        return bool(select.select([self._socket.fileno()], [], [], timeout)[0])

    def read(self):
        """Every queued notification as events, in kernel order ([] when none is queued); an
        Overflow event where the kernel dropped some."""
        events = []
        while True:
            try:
                data = self._socket.recv(RECEIVE_SIZE)
            except BlockingIOError:
                return events
            except OSError as error:
                if error.errno != errno.ENOBUFS:
                    raise
                events.append(Overflow())
                continue
            events.extend(parse(data))

    def drop_own(self, port, fdb=()):
        """Until keep_all(), have the kernel drop the notifications of the agent's own requests
        (own_changes_filter's arguments) instead of queueing them here; False when it cannot
        (they are then read, and compared with what the agent wants like any other)."""
        program = own_changes_filter(port, fdb)
        instructions = ctypes.create_string_buffer(program, len(program))
        try:  # struct sock_fprog: the count, then a pointer to the instructions (copied by the kernel)
            self._socket.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack(
                "@HP", len(program) // _INSTRUCTION.size, ctypes.addressof(instructions)))
        except OSError:
            return False
        return True

    def keep_all(self):
        """Queue every notification again (after drop_own)."""
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
        except OSError:
            pass  # closed meanwhile (the agent stopping), or no filter attached: nothing is dropped

    def close(self):
        self._socket.close()
