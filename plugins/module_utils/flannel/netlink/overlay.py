"""A read-only view of a vxlan overlay, for overlay_info (and the tests)."""

import socket

from . import session
from .entries import fdb_entries, permanent_neighbours, routes_via
from .links import addresses_of, link_attributes, link_index

try:
    from netaddr import IPAddress, IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    IPAddress = IPNetwork = None


def overlay_state(device, ipr=None):
    """What the kernel holds for a vxlan overlay. `device` is a VNI (int) or a device name.

    Returns {"name", "exists", "device": link_attributes(..) + "addresses" (IPv4) and "addresses6" or None,
    "routes": [{"dst", "gateway", "onlink"}], "neighbours": [{"ip", "mac"}],
    "fdb": [{"mac", "dst"}]}, all sorted (IPv4 first), JSON-able.
    """
    name = "flannel.%d" % device if isinstance(device, int) else str(device)
    state = {"name": name, "exists": False, "device": None, "routes": [], "neighbours": [], "fdb": []}
    with session(ipr) as ipr:
        index = link_index(name, ipr)
        if index is None:
            return state
        device_attrs = link_attributes(index, ipr)
        device_attrs["addresses"] = sorted(addresses_of(index, ipr))
        device_attrs["addresses6"] = sorted(addresses_of(index, ipr, socket.AF_INET6))
        state.update(exists=True, device=device_attrs)
        # Both families: a dual-stack network's IPv6 entries are on flannel.<VNI> (IPv4 underlay)
        # or on flannel-v6.<VNI> (IPv6 underlay), read as a device of its own.
        routes = routes_via(index, ipr) + routes_via(index, ipr, inside=IPNetwork("::/0"))
        state["routes"] = sorted(({"dst": r.dst, "gateway": r.gateway, "onlink": r.onlink} for r in routes),
                                 key=lambda r: (IPNetwork(r["dst"]).version, IPNetwork(r["dst"])))
        neighbours = dict(permanent_neighbours(index, ipr), **permanent_neighbours(index, ipr, socket.AF_INET6))
        state["neighbours"] = [{"ip": ip, "mac": mac} for ip, mac in
                               sorted(neighbours.items(), key=lambda item: (IPAddress(item[0]).version,
                                                                            IPAddress(item[0])))]
        state["fdb"] = [{"mac": mac, "dst": dst} for mac, dst in sorted(fdb_entries(index, ipr))]
    return state
