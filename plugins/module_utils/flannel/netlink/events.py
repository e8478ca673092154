"""Kernel notifications as small typed events (pyroute2 only): links, IPv4 addresses, IPv4
neighbours, bridge FDB entries (AF_BRIDGE neighbours) and main-table IPv4 routes.

KernelEvents is a synchronous socket bound to the rtnetlink multicast groups: fileno() for a
select, read() drains what is queued without blocking. It owns no state of the agent's;
kernel_repairs.py compares the events with what the agent owns. The agent's own changes are
announced too (the kernel tells every listener): they are told apart by comparing the announced
entry with the wanted one, not by asking the kernel again.
"""

import collections
import errno
import select
import socket

from . import AF_BRIDGE, IFF_UP, MAIN_TABLE, NUD_PERMANENT, RTNH_F_ONLINK
from .entries import Route

# rtnetlink multicast groups (the legacy bit masks bind() takes).
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4  # IPv4 neighbours and, with family AF_BRIDGE, FDB entries
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
GROUPS = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
RTN_UNICAST = 1
# A burst (a device with 169 peers deleted) must not overflow the queue; only touched pages count.
RECEIVE_BUFFER = 4 << 20

LinkEvent = collections.namedtuple("LinkEvent", "removed index name mtu up mac")
AddressEvent = collections.namedtuple("AddressEvent", "removed index address prefixlen")
NeighbourEvent = collections.namedtuple("NeighbourEvent", "removed index ip mac permanent")
FdbEvent = collections.namedtuple("FdbEvent", "removed index mac dst")
RouteEvent = collections.namedtuple("RouteEvent", "removed route metric")  # route: entries.Route
# The kernel dropped notifications (the queue overflowed): only a full reconcile knows the state.
Overflow = collections.namedtuple("Overflow", "")


def _link(message, removed):
    return LinkEvent(removed, message["index"], message.get_attr("IFLA_IFNAME"), message.get_attr("IFLA_MTU"),
                     bool(message["flags"] & IFF_UP), message.get_attr("IFLA_ADDRESS"))


def _address(message, removed):
    if message["family"] != socket.AF_INET:
        return None
    address = message.get_attr("IFA_LOCAL") or message.get_attr("IFA_ADDRESS")
    return AddressEvent(removed, message["index"], address, message["prefixlen"])


def _neighbour(message, removed):
    family = message["family"]
    if family == AF_BRIDGE:
        dst = message.get_attr("NDA_DST")
        if not dst:  # a local (bridge port) entry, never one of a vxlan device's remotes
            return None
        return FdbEvent(removed, message["ifindex"], message.get_attr("NDA_LLADDR"), dst)
    if family != socket.AF_INET:
        return None
    return NeighbourEvent(removed, message["ifindex"], message.get_attr("NDA_DST"),
                          message.get_attr("NDA_LLADDR"), bool(message["state"] & NUD_PERMANENT))


def _route(message, removed):
    if message["family"] != socket.AF_INET or message["type"] != RTN_UNICAST:
        return None
    if (message.get_attr("RTA_TABLE") or message["table"]) != MAIN_TABLE:
        return None
    dst = "%s/%d" % (message.get_attr("RTA_DST") or "0.0.0.0", message["dst_len"])
    route = Route(dst, message.get_attr("RTA_GATEWAY"), message.get_attr("RTA_OIF"),
                  bool(message["flags"] & RTNH_F_ONLINK))
    return RouteEvent(removed, route, message.get_attr("RTA_PRIORITY") or 0)


_PARSERS = {RTM_NEWLINK: (_link, False), RTM_DELLINK: (_link, True),
            RTM_NEWADDR: (_address, False), RTM_DELADDR: (_address, True),
            RTM_NEWNEIGH: (_neighbour, False), RTM_DELNEIGH: (_neighbour, True),
            RTM_NEWROUTE: (_route, False), RTM_DELROUTE: (_route, True)}


def parse(message):
    """The typed event of one rtnetlink message, or None for one the agent never acts on."""
    kind = _PARSERS.get(message["header"]["type"])
    if kind is None:
        return None
    parser, removed = kind
    return parser(message, removed)


class KernelEvents:
    """Notifications of the current network namespace, read without blocking."""

    def __init__(self, groups=GROUPS):
        from pyroute2.netlink.rtnl.iprsocket import IPRSocket  # synchronous: select() sees every message

        self._socket = IPRSocket()
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            self._socket.bind(groups=groups)
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
        while self.wait(0):
            try:
                messages = self._socket.get()
            except OSError as error:
                if error.errno != errno.ENOBUFS:
                    raise
                events.append(Overflow())
                continue
            for message in messages:
                event = parse(message)
                if event is not None:
                    events.append(event)
        return events

    def close(self):
        self._socket.close()
