"""Links and their addresses: lookup, attributes, vxlan device creation and removal, settings
(state, MAC, MTU), addresses, tx checksum offload."""

import socket

from . import IFF_UP, TX_CSUM_FEATURE, optional_ipr

IFA_F_NODAD = 0x02
from .interfaces import _links


@optional_ipr
def link_index(name, ipr=None):
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


@optional_ipr
def link_attributes(index, ipr=None):
    """A JSON-able dict of a link, with the vxlan options when it is a vxlan device."""
    msg = ipr.get_links(index)[0]
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    attrs = {"name": msg.get_attr("IFLA_IFNAME"), "index": index, "kind": kind,
             "mtu": msg.get_attr("IFLA_MTU"), "mac": msg.get_attr("IFLA_ADDRESS"),
             "state": "up" if msg["flags"] & IFF_UP else "down",
             "operstate": msg.get_attr("IFLA_OPERSTATE")}
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    if kind == "vxlan" and data is not None:
        link = data.get_attr("IFLA_VXLAN_LINK")
        attrs.update({"vni": data.get_attr("IFLA_VXLAN_ID"),
                      "local": data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6"),
                      "port": data.get_attr("IFLA_VXLAN_PORT"),
                      "learning": bool(data.get_attr("IFLA_VXLAN_LEARNING")),
                      "gbp": bool(data.get_attr("IFLA_VXLAN_GBP")),
                      "link_index": link,
                      "link_name": _links(ipr).get(link, (None, None))[0] if link else None})
    return attrs


@optional_ipr
def create_vxlan(name, vni, local, link, port, gbp, mac, mtu, ipr=None):
    """Create a learning-off vxlan device (down) whose tunnel endpoints are of `local`'s family
    (flannel.<VNI>: IPv4, flannel-v6.<VNI>: IPv6); returns its index."""
    options = dict(ifname=name, kind="vxlan", vxlan_id=vni, vxlan_link=link,
                   vxlan_port=port, vxlan_learning=0, address=mac, mtu=mtu)
    options["vxlan_local6" if ":" in local else "vxlan_local"] = local
    if gbp:
        options["vxlan_gbp"] = True  # a flag attribute: present means on
    ipr.link("add", **options)
    return link_index(name, ipr)


@optional_ipr
def addresses_of(index, ipr=None, family=socket.AF_INET):
    """The addresses of `family` (IPv4 unless told) of a link as 'address/len' strings; IPv6 ones
    only of global scope (not the kernel's link-local one)."""
    return ["%s/%d" % (msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS"), msg["prefixlen"])
            for msg in ipr.get_addr(family=family, index=index)
            if family == socket.AF_INET or msg["scope"] == 0]


@optional_ipr
def delete_link(index, ipr=None):
    """Delete a link; the kernel drops its addresses, neighbours, FDB entries and routes with it."""
    ipr.link("del", index=index)


@optional_ipr
def set_link_up(index, ipr=None):
    ipr.link("set", index=index, state="up")


@optional_ipr
def set_link_mac(index, mac, ipr=None):
    ipr.link("set", index=index, address=mac)


@optional_ipr
def set_link_mtu(index, mtu, ipr=None):
    ipr.link("set", index=index, mtu=mtu)


@optional_ipr
def add_address(index, address, ipr=None):
    """Add an address given as 'address/len'. An IPv6 one skips duplicate address detection: the
    overlay's devices answer no multicast (no learning), and a tentative address could not be used
    as a source for the second or so DAD takes."""
    ip, prefixlen = address.split("/")
    if ":" in ip:
        ipr.addr("add", index=index, address=ip, prefixlen=int(prefixlen), family=socket.AF_INET6,
                 flags=IFA_F_NODAD)
    else:
        ipr.addr("add", index=index, address=ip, prefixlen=int(prefixlen))


@optional_ipr
def delete_address(index, address, ipr=None):
    """Delete an address given as 'address/len'."""
    ip, prefixlen = address.split("/")
    ipr.addr("del", index=index, address=ip, prefixlen=int(prefixlen),
             family=socket.AF_INET6 if ":" in ip else socket.AF_INET)


def set_tx_checksum_offload(ifname, enabled):
    """Turn tx-checksum-ip-generic on or off for a device of the CURRENT namespace. Only that
    feature is written, so the kernel brings back the segmentation offloads that depend on it
    when it is turned on again. Returns True when it changed something."""
    from .ethtool import set_feature

    return set_feature(ifname, TX_CSUM_FEATURE, enabled)


def enable_ipv6(ifname):
    """Turn IPv6 on for a device of the CURRENT namespace (net.ipv6.conf.<dev>.disable_ipv6 = 0):
    a device made where the default is off (a container started without IPv6, as Docker makes the
    lab's nodes) would refuse its IPv6 address. Returns True when it changed something; False also
    when the kernel has no IPv6 at all (no such setting)."""
    path = "/proc/sys/net/ipv6/conf/%s/disable_ipv6" % ifname
    try:
        with open(path) as handle:
            if handle.read().strip() == "0":
                return False
        with open(path, "w") as handle:
            handle.write("0")
    except FileNotFoundError:
        return False
    return True
