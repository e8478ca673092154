"""The entries the backends program per peer: permanent neighbours, FDB entries and routes."""

import collections
import errno
import socket

from . import (AF_BRIDGE, MAIN_TABLE, NTF_SELF, NUD_PERMANENT, RTNH_F_ONLINK, RTPROT_KERNEL, NetlinkError, is_errno,
               optional_ipr)

try:
    from netaddr import IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    IPNetwork = None


def family_of(address):
    """socket.AF_INET6 for an IPv6 address or prefix (text), else socket.AF_INET."""
    return socket.AF_INET6 if ":" in str(address) else socket.AF_INET


@optional_ipr
def permanent_neighbours(index, ipr=None, family=socket.AF_INET):
    """ip -> mac of the permanent neighbours of `family` (IPv4 unless told) on a link."""
    return dict((msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR"))
                for msg in ipr.get_neighbours(family=family, ifindex=index)
                if msg["ifindex"] == index and msg["state"] & NUD_PERMANENT)


@optional_ipr
def replace_neighbour(index, ip, mac, ipr=None):
    ipr.neigh("replace", ifindex=index, dst=ip, lladdr=mac, state=NUD_PERMANENT, family=family_of(ip))


@optional_ipr
def delete_neighbour(index, ip, ipr=None):
    ipr.neigh("del", ifindex=index, dst=ip, family=family_of(ip))


@optional_ipr
def fdb_entries(index, ipr=None):
    """(mac, dst) pairs of the link's own (self) FDB entries that have a remote dst."""
    return [(msg.get_attr("NDA_LLADDR"), msg.get_attr("NDA_DST"))
            for msg in ipr.get_neighbours(family=AF_BRIDGE, ifindex=index)
            if msg["ifindex"] == index and msg.get_attr("NDA_DST")]


@optional_ipr
def replace_fdb(index, mac, dst, ipr=None):
    ipr.fdb("replace", ifindex=index, lladdr=mac, dst=dst, state=NUD_PERMANENT, flags=NTF_SELF)


@optional_ipr
def delete_fdb(index, mac, dst, ipr=None):
    ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst, flags=NTF_SELF)


Route = collections.namedtuple("Route", "dst gateway index onlink")


@optional_ipr
def routes_via(index, ipr=None, inside=None):
    """Main-table unicast routes out of link `index` (not the kernel's own), as Route tuples;
    with `inside` (an IPNetwork), only those whose destination lies in it, of its family (else IPv4)."""
    found = []
    family = socket.AF_INET6 if inside is not None and inside.version == 6 else socket.AF_INET
    for msg in ipr.get_routes(family=family, table=MAIN_TABLE):
        if msg.get_attr("RTA_OIF") != index or msg["proto"] == RTPROT_KERNEL:
            continue
        if (msg.get_attr("RTA_TABLE") or msg["table"]) != MAIN_TABLE:
            continue
        dst = IPNetwork("%s/%d" % (msg.get_attr("RTA_DST") or ("::" if family == socket.AF_INET6 else "0.0.0.0"),
                                   msg["dst_len"]))
        if inside is not None and dst not in inside:
            continue
        found.append(Route(str(dst), msg.get_attr("RTA_GATEWAY"), index,
                           bool(msg["flags"] & RTNH_F_ONLINK)))
    return found


@optional_ipr
def link_route_destinations(index, ipr=None):
    """'a.b.c.d/len' of every main-table IPv4 route out of link `index`, the kernel's own included."""
    return set("%s/%d" % (msg.get_attr("RTA_DST") or "0.0.0.0", msg["dst_len"])
               for msg in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE)
               if msg.get_attr("RTA_OIF") == index and (msg.get_attr("RTA_TABLE") or msg["table"]) == MAIN_TABLE)


@optional_ipr
def replace_route(route, ipr=None):
    address, length = route.dst.split("/")  # a Route's dst is written 'address/len'
    ipr.route("replace", dst=address, dst_len=int(length), gateway=route.gateway, family=family_of(address),
              oif=route.index, table=MAIN_TABLE, flags=RTNH_F_ONLINK if route.onlink else 0)


@optional_ipr
def delete_route(route, ipr=None):
    address, length = route.dst.split("/")
    ipr.route("del", dst=address, dst_len=int(length), gateway=route.gateway, family=family_of(address),
              oif=route.index, table=MAIN_TABLE)


@optional_ipr
def replace_link_route(network, index, ipr=None):
    """Route `network` (an IPNetwork) straight out of link `index`, with no gateway."""
    ipr.route("replace", dst=str(network.ip), dst_len=network.prefixlen, oif=index, table=MAIN_TABLE)


@optional_ipr
def direct_route(ip, ipr=None):
    """The outgoing link index when `ip` is reachable without a gateway (on-link), else None."""
    try:
        found = list(ipr.route("get", dst=str(ip)))
    except NetlinkError as error:
        if is_errno(error, errno.ENETUNREACH, errno.EHOSTUNREACH):
            return None
        raise
    if len(found) == 1 and not found[0].get_attr("RTA_GATEWAY"):
        return found[0].get_attr("RTA_OIF")
    return None


def format_route(route, name=None):
    text = "route %s via %s dev %s" % (route.dst, route.gateway, name or route.index)
    return text + " onlink" if route.onlink else text
