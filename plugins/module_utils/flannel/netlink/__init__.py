"""Kernel networking state through netlink (pyroute2 only): the one place of the agent and the
modules that talks to pyroute2. This module holds what every part shares (the pyroute2 names,
kernel constants, sessions); the parts are:

- interfaces: the external interface's choice, this host's addresses, the VTEP MAC;
- links: links and their addresses, device creation and settings;
- entries: routes, neighbours and FDB entries (what the backends program per peer);
- overlay: the read-only view of a vxlan overlay for overlay_info;
- events: the kernel's notifications as small typed events (the agent's repairs, kernel_repairs.py);
- batch: requests sent together on a synchronous socket (a peer's three entries).

Works with pyroute2 0.7.2 (Debian 12) and 0.9.x: only the common IPRoute calls are used and
messages are read with get_attr(). Every function takes an optional `ipr` (IPRoute or NetNS);
without one it opens and closes its own IPRoute.
"""

import collections
import functools
import inspect

try:
    from pyroute2 import IPRoute, NetlinkError
except ImportError:  # reported by the caller through missing_libraries()
    IPRoute = None
    NetlinkError = OSError

# Kernel constants, spelled out because pyroute2's module layout differs between versions.
AF_BRIDGE = 7
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
IFF_UP = 0x1
MAIN_TABLE = 254
RTPROT_KERNEL = 2
RTMGRP_IPV4_IFADDR = 0x10
LINK_LOCAL = "169.254.0.0/16"
TX_CSUM_FEATURE = "tx-checksum-ip-generic"

NO_INTERFACE_MESSAGE = "Failed to find interface to use that matches the interfaces and/or regexes provided"

Interface = collections.namedtuple("Interface", "name index address mtu")


class InterfaceError(Exception):
    """No usable external interface: the agent cannot start."""


class _Session:
    """The caller's ipr, or a private IPRoute closed on exit."""

    def __init__(self, ipr):
        self.given = ipr
        self.ipr = None

    def __enter__(self):
        self.ipr = self.given if self.given is not None else IPRoute()
        return self.ipr

    def __exit__(self, *exc):
        if self.given is None:
            self.ipr.close()


def open_ipr():
    """An IPRoute for the caller to keep and close (a backend holds one for its life)."""
    return IPRoute()


def session(ipr=None):
    """`with session(ipr) as ipr:` works whether or not the caller passed one."""
    return _Session(ipr)


def optional_ipr(function):
    """Let `function(..., ipr)` be called without ipr: it then gets a private IPRoute.
    The check is positional-or-keyword and cheap, since backends call these per event."""
    position = list(inspect.signature(function).parameters).index("ipr")

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if kwargs.get("ipr") is not None or (len(args) > position and args[position] is not None):
            return function(*args, **kwargs)
        with session(None) as ipr:
            if len(args) > position:
                args = args[:position] + (ipr,) + args[position + 1:]
            else:
                kwargs["ipr"] = ipr
            return function(*args, **kwargs)
    return wrapper


def is_errno(error, *codes):
    return isinstance(error, NetlinkError) and getattr(error, "code", None) in codes


# The parts, re-exported: callers use netlink.<name> whatever part defines it.
from .interfaces import (LocalAddresses, deterministic_vtep_mac, interface_addresses,  # noqa: E402
                         interface_has_address, interface_ipv6_addresses, local_ipv4_addresses, local_ipv4_prefixes,
                         local_ipv6_addresses, select_interface)
from .links import (add_address, addresses_of, create_vxlan, delete_address, delete_link, enable_ipv6,  # noqa: E402
                    link_attributes, link_index, set_link_mac, set_link_mtu, set_link_up, set_tx_checksum_offload)
from .entries import (Route, delete_fdb, family_of, delete_neighbour, delete_route, direct_route, fdb_entries,  # noqa: E402
                      format_route, link_route_destinations, permanent_neighbours, replace_fdb,
                      replace_link_route, replace_neighbour, replace_route, routes_via)
from .overlay import overlay_state  # noqa: E402
from .batch import Batch, RequestError  # noqa: E402
