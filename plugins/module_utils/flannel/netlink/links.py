"""Links and their addresses: lookup, attributes, vxlan device creation and removal, settings
(state, MAC, MTU), addresses, tx checksum offload."""

import socket

from . import IFF_UP, TX_CSUM_FEATURE, optional_ipr
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
        attrs.update({"vni": data.get_attr("IFLA_VXLAN_ID"), "local": data.get_attr("IFLA_VXLAN_LOCAL"),
                      "port": data.get_attr("IFLA_VXLAN_PORT"),
                      "learning": bool(data.get_attr("IFLA_VXLAN_LEARNING")),
                      "gbp": bool(data.get_attr("IFLA_VXLAN_GBP")),
                      "link_index": link,
                      "link_name": _links(ipr).get(link, (None, None))[0] if link else None})
    return attrs


@optional_ipr
def create_vxlan(name, vni, local, link, port, gbp, mac, mtu, ipr=None):
    """Create a learning-off vxlan device (down); returns its index."""
    options = dict(ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local, vxlan_link=link,
                   vxlan_port=port, vxlan_learning=0, address=mac, mtu=mtu)
    if gbp:
        options["vxlan_gbp"] = True  # a flag attribute: present means on
    ipr.link("add", **options)
    return link_index(name, ipr)


@optional_ipr
def addresses_of(index, ipr=None):
    """The IPv4 addresses of a link as 'a.b.c.d/len' strings."""
    return ["%s/%d" % (msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS"), msg["prefixlen"])
            for msg in ipr.get_addr(family=socket.AF_INET, index=index)]


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
    """Add an IPv4 address given as 'a.b.c.d/len'."""
    ip, prefixlen = address.split("/")
    ipr.addr("add", index=index, address=ip, prefixlen=int(prefixlen))


@optional_ipr
def delete_address(index, address, ipr=None):
    """Delete an IPv4 address given as 'a.b.c.d/len'."""
    ip, prefixlen = address.split("/")
    ipr.addr("del", index=index, address=ip, prefixlen=int(prefixlen))


def set_tx_checksum_offload(ifname, enabled):
    """Turn tx-checksum-ip-generic on or off for a device of the CURRENT namespace. Only that
    feature is written, so the kernel brings back the segmentation offloads that depend on it
    when it is turned on again. Returns True when it changed something."""
    from .ethtool import set_feature

    return set_feature(ifname, TX_CSUM_FEATURE, enabled)
