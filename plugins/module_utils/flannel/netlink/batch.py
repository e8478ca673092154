"""Requests sent together: a peer's neighbour, FDB entry and route in one datagram on a
synchronous rtnetlink socket, answered by one acknowledgement each.

Each IPRoute call of pyroute2 0.9 runs its asyncio machinery (about 0.2 ms of CPU); a Batch
packs the few fields of its messages with struct (pyroute2's message classes took about 0.3 ms
of CPU per peer to encode three) and sends them with one send() on an IPRSocket. A Batch
stands where an IPRoute would: replace_neighbour(..., ipr=batch) and the
other entry functions queue their request on it, and send() sends what was queued. The kernel
handles each message on its own, so one refused entry does not stop the others; send()
reports each refusal as a RequestError naming the object and its values. With
`own_announcements` (the agent's netlink.events.KernelEvents), the kernel is told to drop the
announcements of each send instead of waking the kernel-events thread for them.
"""

import errno
import os
import select
import socket
import struct

from . import AF_BRIDGE, MAIN_TABLE, NetlinkError

try:
    from pyroute2.netlink.rtnl.iprsocket import IPRSocket
except ImportError:  # reported by the caller through missing_libraries()
    IPRSocket = None

NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEIGH, RTM_DELNEIGH = 24, 25, 28, 29
NDA_DST, NDA_LLADDR = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RTPROT_STATIC = 4  # what IPRoute's route() writes: `ip route` shows "proto static"
RTN_UNICAST = 1
RT_SCOPE_NOWHERE = 255  # in a deletion: a route of any scope
ANSWER_TIMEOUT = 5.0
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_ERROR = struct.Struct("=i")  # nlmsgerr's error, after the header
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_ATTR = struct.Struct("=HH")  # length, type
_U32 = struct.Struct("=I")
_CHANGE_FLAGS = {"replace": NLM_F_CREATE | NLM_F_REPLACE, "del": 0}


class RequestError(NetlinkError):
    """The kernel refused one request of a batch: the message names the object and its values."""

    def __init__(self, code, what):
        super().__init__(code, "%s: %s" % (what, os.strerror(code)))
        self.what = what

    def __str__(self):
        return "%s (errno %d)" % (self.args[1], self.code)


class Batch:
    """Requests queued through the entry functions and sent by send(), on a socket of its own in
    `ipr`'s network namespace, opened at the first send and kept until close()."""

    def __init__(self, ipr):
        self.ipr = ipr
        self.own_announcements = None  # a KernelEvents listening in this namespace, or None
        self._socket = None
        self._port = None
        self._sequence = 0
        self._queued = []  # (sequence, what, encoded message, the FDB announcement it makes or None)

    # -- the IPRoute calls the entry functions make ----------------------------------------------

    def neigh(self, command, ifindex, dst, lladdr=None, state=0, family=None):
        self._queue_neighbour(command, family or _family(dst), ifindex, state, 0, dst, lladdr,
                              "neighbour %s lladdr %s on link %d" % (dst, lladdr, ifindex))

    def fdb(self, command, ifindex, lladdr, dst, state=0, flags=0):
        self._queue_neighbour(command, AF_BRIDGE, ifindex, state, flags, dst, lladdr,
                              "fdb %s dst %s on link %d" % (lladdr, dst, ifindex))

    def route(self, command, dst, dst_len, gateway, oif, table=MAIN_TABLE, flags=0, family=None):
        if command == "replace":
            proto, scope, kind = RTPROT_STATIC, 0, RTN_UNICAST
        else:  # a deletion matches whatever wrote the route (flanneld's proto, any scope)
            proto, scope, kind = 0, RT_SCOPE_NOWHERE, 0
        body = _RTMSG.pack(family or _family(dst), dst_len, 0, 0, min(table, 255), proto, scope, kind, flags) + \
            _attribute(RTA_TABLE, _U32.pack(table)) + _attribute(RTA_DST, _address(dst)) + \
            (_attribute(RTA_GATEWAY, _address(gateway)) if gateway else b"") + \
            (_attribute(RTA_OIF, _U32.pack(oif)) if oif is not None else b"")
        self._queue(body, RTM_NEWROUTE if command == "replace" else RTM_DELROUTE, command,
                    "route %s/%d via %s oif %d%s" % (dst, dst_len, gateway, oif, " onlink" if flags else ""))

    # -- sending ---------------------------------------------------------------------------------

    def send(self):
        """Send what was queued in one datagram and read every acknowledgement. Returns
        {position in the queue: RequestError} for the requests the kernel refused."""
        queued, self._queued = self._queued, []
        if not queued:
            return {}
        if self._socket is None:
            self._socket = _open_socket(self.ipr)
            self._port = self._socket.socket.getsockname()[0]
        # The kernel handles the requests within send() and announces the changes there: the
        # filter is on only while they are made, so it never hides anyone else's later change.
        listener = self.own_announcements
        dropping = listener is not None and listener.drop_own(
            self._port, [announced for _sequence, _what, _data, announced in queued if announced])
        try:
            self._socket.socket.send(b"".join(data for _sequence, _what, data, _announced in queued))
        finally:
            if dropping:
                listener.keep_all()
        positions = dict((sequence, position) for position, (sequence, _what, _data, _announced) in enumerate(queued))
        refused = {}
        while positions:
            data = self._receive(len(positions))
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _flags, sequence, _port = _HEADER.unpack_from(data, offset)
                if kind == NLMSG_ERROR and sequence in positions:
                    position = positions.pop(sequence)
                    code = -_ERROR.unpack_from(data, offset + _HEADER.size)[0]
                    if code:
                        refused[position] = RequestError(code, queued[position][1])
                offset += (length + 3) & ~3
        return refused

    def close(self):
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            self._port = None

    def _receive(self, waited):
        # The kernel answers within send(), one datagram per request: each is read without a wait
        # (a select per answer cost three system calls per peer); a wait, bounded so that a lost
        # answer cannot hang the agent, only when none is queued yet.
        try:
            return self._socket.socket.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        if not select.select([self._socket.socket], [], [], ANSWER_TIMEOUT)[0]:
            raise NetlinkError(errno.ETIMEDOUT, "no answer from the kernel to %d requests in %d s"
                               % (waited, ANSWER_TIMEOUT))
        return self._socket.socket.recv(65536)

    def _queue_neighbour(self, command, family, ifindex, state, flags, dst, lladdr, what):
        address, mac = _address(dst), bytes.fromhex(lladdr.replace(":", "")) if lladdr else None
        body = _NDMSG.pack(family, ifindex, state, flags, 0) + _attribute(NDA_DST, address) + \
            (_attribute(NDA_LLADDR, mac) if mac else b"")
        kind = RTM_NEWNEIGH if command == "replace" else RTM_DELNEIGH
        # The vxlan driver announces an FDB change with port 0, not ours: it is named to the filter.
        announced = (kind, ifindex, mac, address) if family == AF_BRIDGE and mac else None
        self._queue(body, kind, command, what, announced)

    def _queue(self, body, kind, command, what, announced=None):
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        header = _HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | _CHANGE_FLAGS[command],
                              self._sequence, 0)
        self._queued.append((self._sequence, what, header + body, announced))


def _attribute(kind, payload):
    """One netlink attribute, padded to 4 bytes."""
    return _ATTR.pack(_ATTR.size + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def _family(text):
    return socket.AF_INET6 if ":" in text else socket.AF_INET


def _address(text):
    return socket.inet_pton(_family(text), text)


def _open_socket(ipr):
    """An IPRSocket in the namespace of `ipr` (a NetNS names one; an IPRoute is this one's),
    subscribed to no group, so that it reads only its answers; bound, so that its port id (which
    the kernel stamps on the announcements of its requests) is known before its first send."""
    status = getattr(getattr(ipr, "asyncore", None), "status", None) or {}
    opened = IPRSocket(groups=0, netns=status.get("netns"))
    if not opened.socket.getsockname()[0]:
        opened.socket.bind((0, 0))  # port 0: the kernel picks a free one
    return opened
