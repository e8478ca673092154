#!/usr/bin/python
# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: overlay_info
short_description: Report a host's flannel overlay state (lease, VXLAN device, per-peer entries)
version_added: 1.0.0
description:
  - Reads, on the host, what the agent set up. That is the lease in the subnet file (C(/run/flannel/subnet.env)),
    the VXLAN device C(flannel.<VNI>) (MTU, MAC, addresses, VXLAN options), and the routes,
    permanent neighbours and FDB entries through that device.
  - With O(peers), compares the kernel with what the agent must have programmed for each peer's lease
    (route C(<subnet> via <subnet address> onlink), neighbour C(<subnet address> lladdr <VtepMAC>),
    FDB C(<VtepMAC> dst <PublicIP>)) and reports each missing or stale entry in RV(drift).
    The expected entries come from the agent's own vxlan backend, so the two cannot disagree.
  - On a dual-stack network (this host's subnet file has an IPv6 subnet), each peer lease with an IPv6 subnet needs
    the same three entries for it, as the agent programs them. They are on C(flannel-v6.<vni>) (read as RV(ipv6_device))
    when this host has that device and the peer publishes C(PublicIPv6) and a v6 VtepMAC, else on the device itself
    (IPv6 inside the IPv4 VXLAN), and drift is reported the same way.
  - With O(direct_routing), a peer whose public IP is on a link of this host is expected to have
    only the route C(<subnet> via <PublicIP>) on that link, as the agent programs it.
  - With O(wireguard), the device is the wireguard backend's C(flannel-wg) and RV(wireguard) is what its WireGuard
    holds (the kernel's, or wireguard-go's through its control socket); with O(peers), each peer lease must be a
    WireGuard peer with its C(PublicKey), endpoint C(<PublicIP>:<Port>) and its subnet as allowed IPs, and the
    Network must be routed through the device.
  - Changes nothing.
extends_documentation_fragment:
  - netlab.flannel._attributes
  - netlab.flannel._attributes.INFO_MODULE
options:
  vni:
    description: The VXLAN network identifier; the device is C(flannel.<vni>).
    type: int
  device:
    description: The device name, when it is not C(flannel.<vni>).
    type: str
  subnet_file:
    description: The subnet file the agent writes (flanneld's C(-subnet-file)).
    type: path
    default: /run/flannel/subnet.env
  peers:
    description:
      - The other hosts' leases, as M(netlab.flannel.lease_info) returns them in RV(netlab.flannel.lease_info#module:leases).
      - Only C(subnet), C(public_ip) and C(vtep_mac) are used, and on a dual-stack network C(ipv6_subnet), C(public_ipv6)
        and C(vtep_mac_v6); a lease of this host's own subnet is ignored.
    type: list
    elements: dict
  wireguard:
    description:
      - Read the wireguard backend's device C(flannel-wg) and its WireGuard peers (no O(vni) nor O(device) then).
      - Omitted, or false, one of O(vni) and O(device) names the device.
    type: bool
  direct_routing:
    description:
      - The network config's C(Backend.DirectRouting), as M(netlab.flannel.lease_info) returns it in
        RV(netlab.flannel.lease_info#module:config).
      - Only used with O(peers).
    type: bool
    default: false
requirements:
  - pyroute2 >= 0.7.2 and netaddr >= 0.8.0 on the host.
author:
  - netlab.flannel developers (@netlab)
seealso:
  - module: netlab.flannel.lease_info
"""

EXAMPLES = r"""
- name: Read the cluster's leases
  netlab.flannel.lease_info:
    endpoints: http://192.168.205.10:2379
  delegate_to: "{{ groups['etcd'][0] }}"
  run_once: true
  register: flannel_leases

- name: Check this host's overlay against the other hosts' leases
  netlab.flannel.overlay_info:
    vni: 100
    peers: "{{ flannel_leases.leases }}"
  register: flannel_overlay

- name: Fail on drift
  ansible.builtin.assert:
    that: flannel_overlay.in_sync
    fail_msg: "{{ inventory_hostname }}: {{ flannel_overlay.drift | join('; ') }}"
"""

RETURN = r"""
name:
  description: The device name looked at.
  returned: always
  type: str
  sample: flannel.100
exists:
  description: Whether the device exists.
  returned: always
  type: bool
  sample: true
device:
  description: The device's attributes; V(null) when it does not exist.
  returned: always
  type: dict
  sample:
    name: flannel.100
    kind: vxlan
    mtu: 1450
    mac: 9e:61:5b:8a:30:10
    state: up
    vni: 100
    port: 8472
    local: 192.168.205.10
    learning: false
    link_name: eth1
    addresses: [10.15.64.0/32]
    addresses6: []
routes:
  description: The routes through the device (both families).
  returned: always
  type: list
  elements: dict
  sample: [{dst: 10.13.48.0/20, gateway: 10.13.48.0, onlink: true}]
neighbours:
  description: The permanent neighbours on the device (both families).
  returned: always
  type: list
  elements: dict
  sample: [{ip: 10.13.48.0, mac: 2a:11:3b:5c:6d:7e}]
fdb:
  description: The device's FDB entries with a remote destination.
  returned: always
  type: list
  elements: dict
  sample: [{mac: 2a:11:3b:5c:6d:7e, dst: 192.168.205.11}]
subnet_env:
  description: The subnet file's variables; empty when the file does not exist.
  returned: always
  type: dict
  sample: {FLANNEL_NETWORK: 10.0.0.0/8, FLANNEL_SUBNET: 10.15.64.1/20, FLANNEL_MTU: "1450", FLANNEL_IPMASQ: "false"}
lease:
  description:
    - This host's lease from the subnet file and the device; V(null) without a subnet file.
    - C(subnet) is the leased network, C(address) FLANNEL_SUBNET as written (Docker's bip), C(vtep_mac) the device's MAC.
    - On a dual-stack network C(ipv6_subnet) is the leased IPv6 network and C(ipv6_address) FLANNEL_IPV6_SUBNET as
      written (Docker's fixed-cidr-v6); both V(null) without one.
  returned: always
  type: dict
  sample: {network: 10.0.0.0/8, subnet: 10.15.64.0/20, address: 10.15.64.1/20, mtu: 1450, ipmasq: false,
           vtep_mac: 9e:61:5b:8a:30:10, ipv6_subnet: null, ipv6_address: null}
peers:
  description:
    - Per peer lease, whether each expected kernel entry is present.
    - V(null) for an entry the peer does not need (a DirectRouting peer on the same link needs only its route).
    - On a dual-stack network a peer with an IPv6 subnet has C(ipv6_subnet), C(route6), C(neighbour6) and C(fdb6) too.
  returned: when O(peers) is given
  type: list
  elements: dict
  sample: [{subnet: 10.13.48.0/20, public_ip: 192.168.205.11, route: true, neighbour: true, fdb: true}]
ipv6_device:
  description:
    - With O(vni), or O(device) named C(flannel.<vni>), the IPv6-underlay device C(flannel-v6.<vni>) as RV(name),
      RV(exists), RV(device), RV(routes), RV(neighbours) and RV(fdb) describe the device; C(exists) false when absent.
  returned: unless O(wireguard) is true
  type: dict
  sample: {name: flannel-v6.100, exists: false, device: null, routes: [], neighbours: [], fdb: []}
drift:
  description: One line per missing or unexpected entry, empty when the kernel matches the leases.
  returned: when O(peers) is given
  type: list
  elements: str
  sample: ["10.13.48.0/20 (192.168.205.11): no FDB entry 2a:11:3b:5c:6d:7e dst 192.168.205.11"]
wireguard:
  description: With O(wireguard), the device's WireGuard state; V(null) when the device does not answer.
  returned: when O(wireguard) is true
  type: dict
  sample:
    implementation: wireguard-go
    public_key: 1Vdo6d+P3ZMzVLlXmpbxnmd0uTaVpcJBCW+AIyTF0WM=
    listen_port: 51820
    peers: [{public_key: hX5K3sYy2Lh0kqPV4MAfVQtgN7mnzF4rVxq1n2D7aC0=, endpoint: "192.168.205.11:51820",
             allowed_ips: [10.13.48.0/20], keepalive: 0, latest_handshake: 1764900000}]
in_sync:
  description: Whether RV(drift) is empty.
  returned: when O(peers) is given
  type: bool
  sample: true
"""

import re
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.netlab.flannel.plugins.module_utils.flannel import missing_libraries, netlink
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.vxlan import peer_entries
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.vxlan_ipv6 import with_ipv6_entries
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import unicast_mac_problem

WIREGUARD_DEVICE = "flannel-wg"


def _lease(subnet_env, device, ip_network):
    """This host's lease as module output, or None when there is no subnet file."""
    if not subnet_env.get("FLANNEL_SUBNET"):
        return None
    ipv6 = subnet_env.get("FLANNEL_IPV6_SUBNET")
    try:
        mtu = int(subnet_env.get("FLANNEL_MTU", ""))
    except ValueError:
        mtu = None
    return dict(network=subnet_env.get("FLANNEL_NETWORK"),
                subnet=str(ip_network(subnet_env["FLANNEL_SUBNET"]).cidr),
                address=subnet_env["FLANNEL_SUBNET"], mtu=mtu,
                ipmasq=subnet_env.get("FLANNEL_IPMASQ") == "true",
                vtep_mac=device["mac"] if device else None,
                ipv6_subnet=str(ip_network(ipv6).cidr) if ipv6 else None, ipv6_address=ipv6 or None)


def _route_text(route):
    return "route %s via %s%s" % (route.dst, route.gateway, " onlink" if route.onlink else "")


class _PeerAttrs:
    """A lease_info lease's addresses and VtepMACs, as with_ipv6_entries reads them."""

    def __init__(self, peer):
        self.public_ip, self.vtep_mac = peer.get("public_ip"), peer.get("vtep_mac")
        self.public_ipv6, self.vtep_mac_v6 = peer.get("public_ipv6"), peer.get("vtep_mac_v6")


def _kernel_entries(views, external_routes):
    """([Route], {(link, ip): mac}, {(link, mac, dst)}) of the overlay_state views (state, link index)."""
    routes, neighbours, fdb = list(external_routes), {}, set()
    for view, index in views:
        routes.extend(netlink.Route(route["dst"], route["gateway"], index, route["onlink"]) for route in view["routes"])
        neighbours.update(((index, entry["ip"]), entry["mac"].lower()) for entry in view["neighbours"])
        fdb.update((index, entry["mac"].lower(), entry["dst"]) for entry in view["fdb"])
    return routes, neighbours, fdb


def compare_peers(state, peers, own_subnet, ip_network, direct_routing=False, onlink=None, external_routes=(),
                  state6=None, ipv6=False):
    """(per-peer status, drift lines): the kernel against what the vxlan backend programs for each
    peer lease (vxlan.peer_entries, and with `ipv6` on a dual-stack network vxlan_ipv6.with_ipv6_entries).

    `state` is netlink.overlay_state()'s, `state6` flannel-v6.<VNI>'s. With `direct_routing`, `onlink` maps a
    peer's public IP (or PublicIPv6) to the link it is directly reachable on (absent or None: not on-link) and
    `external_routes` holds the netlink.Route entries of those links inside the flannel network(s).
    """
    device_index = (state.get("device") or {}).get("index")
    device6_index = ((state6 or {}).get("device") or {}).get("index")
    views = [(state, device_index)] + ([(state6, device6_index)] if device6_index is not None else [])
    kernel_routes, neighbours, fdb = _kernel_entries(views, external_routes)
    status, drift, expected = [], [], set()
    for peer in peers:
        subnet = ip_network(peer["subnet"]).cidr
        if own_subnet is not None and subnet == own_subnet:
            continue
        public_ip = peer.get("public_ip")
        subnet6 = ip_network(peer["ipv6_subnet"]).cidr if ipv6 and peer.get("ipv6_subnet") else None
        peer_status = dict(subnet=str(subnet), public_ip=public_ip, route=None, neighbour=None, fdb=None)
        if subnet6 is not None:
            peer_status.update(ipv6_subnet=str(subnet6), route6=None, neighbour6=None, fdb6=None)
        status.append(peer_status)
        onlink_index = (onlink or {}).get(public_ip) if direct_routing else None
        entries = peer_entries(subnet, public_ip, peer.get("vtep_mac"), direct_routing, device_index, onlink_index)
        if entries is None:
            problem = unicast_mac_problem(peer["vtep_mac"]) if peer.get("vtep_mac") else "missing"
            drift.append("%s (%s): VtepMAC %s, so the agent programs nothing for it" % (subnet, public_ip, problem))
            continue
        labels = [("", "%s (%s)" % (subnet, public_ip))]
        if subnet6 is not None:
            public_ipv6 = peer.get("public_ipv6")
            onlink6 = (onlink or {}).get(public_ipv6) if direct_routing and public_ipv6 else None
            direct6 = netlink.Route(str(subnet6), public_ipv6, onlink6, False) if onlink6 is not None else None
            entries = with_ipv6_entries(entries, subnet6, _PeerAttrs(peer), device_index, device6_index, direct6)
            labels.append(("6", "%s (%s)" % (subnet6, public_ipv6 or public_ip)))
        for suffix, label in labels:
            neighbour, fdb_entry, route = (getattr(entries, name + suffix) for name in ("neighbour", "fdb", "route"))
            if route is None:
                continue
            expected.add((route.dst, route.index))
            peer_status["route" + suffix] = route in kernel_routes
            if not peer_status["route" + suffix]:
                same_link = [found for found in kernel_routes if (found.dst, found.index) == (route.dst, route.index)]
                drift.append("%s: %s %s" % (label, "wrong" if same_link else "no", _route_text(route)))
            if neighbour:
                ip, mac = neighbour
                found = neighbours.get((route.index, ip))
                peer_status["neighbour" + suffix] = found == mac
                if found != mac:
                    drift.append("%s: %s neighbour %s lladdr %s" % (label, "no" if found is None else "wrong", ip, mac))
            if fdb_entry:
                peer_status["fdb" + suffix] = (route.index,) + tuple(fdb_entry) in fdb
                if not peer_status["fdb" + suffix]:
                    drift.append("%s: no FDB entry %s dst %s" % ((label,) + tuple(fdb_entry)))
    for route in sorted(kernel_routes, key=lambda found: (ip_network(found.dst).version, found.dst, found.index or 0)):
        if (route.dst, route.index) not in expected:
            drift.append("route %s via %s matches no peer lease" % (route.dst, route.gateway))
    return status, drift


def wireguard_state(kind):
    """The WireGuard state of flannel-wg as module output, or None when nothing answers for it."""
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.wireguard_device import (
        DeviceError, UapiDevice)
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.wireguard_keys import public_key
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.netlink.wireguard import KernelDevice

    device = KernelDevice(WIREGUARD_DEVICE) if kind == "wireguard" else UapiDevice(WIREGUARD_DEVICE)
    try:
        state = device.state()
    except DeviceError:
        return None
    peers = [dict(public_key=key, endpoint=peer.endpoint, allowed_ips=sorted(peer.allowed_ips),
                  keepalive=peer.keepalive, latest_handshake=state.handshakes.get(key, 0))
             for key, peer in sorted(state.peers.items())]
    return dict(implementation=device.implementation, listen_port=state.listen_port, peers=peers,
                public_key=public_key(state.private_key) if state.private_key else None)


def compare_wireguard_peers(wireguard, state, peers, lease, ip_network):
    """(per-peer status, drift lines): flannel-wg's peers and route against the peer leases."""
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.wireguard_keys import (
        lease_key_and_port)

    if wireguard is None:
        return [], ["%s: no WireGuard answers for the device" % WIREGUARD_DEVICE]
    own = ip_network(lease["subnet"]).cidr if lease else None
    held = dict((peer["public_key"], peer) for peer in wireguard["peers"])
    status, drift, expected = [], [], set()
    for peer in peers:
        subnet = ip_network(peer["subnet"]).cidr
        if own is not None and subnet == own:
            continue
        key, port = lease_key_and_port(peer.get("backend_data"))
        label = "%s (%s)" % (subnet, peer.get("public_ip"))
        wanted = dict(endpoint="%s:%s" % (peer.get("public_ip"), port), allowed_ips=[str(subnet)])
        found = held.get(key)
        expected.add(key)
        ok = found is not None and all(found[name] == value for name, value in wanted.items())
        if not ok:
            drift.append("%s: %s peer %s endpoint %s allowed ips %s" % (
                label, "wrong" if found else "no", key, wanted["endpoint"], str(subnet)))
        status.append(dict(subnet=str(subnet), public_ip=peer.get("public_ip"), peer=ok,
                           latest_handshake=found["latest_handshake"] if found else None))
    drift.extend("peer %s matches no lease" % key for key in sorted(held) if key not in expected)
    network = lease["network"] if lease else None
    if network and network not in [route["dst"] for route in state["routes"]]:
        drift.append("no route %s dev %s" % (network, WIREGUARD_DEVICE))
    return status, drift


def direct_routing_view(peers, state, network, ip_network, network6=None):
    """(onlink, external_routes) for compare_peers, read from the kernel: the link each peer's
    public IP (and PublicIPv6, with `network6`) is directly reachable on, and the routes of those
    links and of the device's own link (the links the backend's direct routes use) inside `network`
    (else to a peer subnet) and `network6`."""
    subnets = set(str(ip_network(peer["subnet"]).cidr) for peer in peers)
    addresses = [peer["public_ip"] for peer in peers]
    if network6 is not None:
        addresses.extend(peer["public_ipv6"] for peer in peers if peer.get("public_ipv6"))
    with netlink.session() as ipr:
        onlink = dict((address, netlink.direct_route(address, ipr)) for address in addresses)
        links = set(index for index in onlink.values() if index is not None)
        if state["device"] and state["device"].get("link_index"):
            links.add(state["device"]["link_index"])
        routes = []
        for index in sorted(links):
            routes.extend(route for route in netlink.routes_via(index, ipr, inside=network)
                          if network is not None or route.dst in subnets)
            if network6 is not None:
                routes.extend(netlink.routes_via(index, ipr, inside=network6))
    return onlink, routes


def ipv6_device_name(device):
    """flannel-v6.<VNI> beside the vxlan device `device` (a VNI or flannel.<VNI>), else None."""
    if isinstance(device, int):
        return "flannel-v6.%d" % device
    match = re.match(r"flannel\.(\d+)$", device)
    return "flannel-v6.%s" % match.group(1) if match else None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            vni=dict(type="int"),
            device=dict(type="str"),
            subnet_file=dict(type="path", default="/run/flannel/subnet.env"),
            peers=dict(type="list", elements="dict"),
            direct_routing=dict(type="bool", default=False),
            wireguard=dict(type="bool"),  # no default: required_one_of would count a default false as given
        ),
        required_one_of=[("vni", "device", "wireguard")],
        mutually_exclusive=[("vni", "device", "wireguard")],
        supports_check_mode=True,
    )
    missing = missing_libraries(["pyroute2", "netaddr"])
    if missing:
        module.fail_json(msg=missing_required_lib(" and ".join(missing)))
    from netaddr import AddrFormatError, IPNetwork
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.subnet_env import read_subnet_env

    if not module.params["wireguard"] and module.params["vni"] is None and module.params["device"] is None:
        module.fail_json(msg="one of the following is required: vni, device (wireguard is false)")
    if module.params["vni"] is not None and not 1 <= module.params["vni"] <= 2 ** 24 - 1:
        module.fail_json(msg="vni: must be between 1 and 16777215, got %d" % module.params["vni"])
    device = module.params["device"] if module.params["device"] else module.params["vni"]
    if module.params["wireguard"]:
        device = WIREGUARD_DEVICE
    device6 = None if module.params["wireguard"] else ipv6_device_name(device)
    try:
        state = netlink.overlay_state(device)
        state6 = netlink.overlay_state(device6) if device6 else None
    except Exception as err:  # netlink errors differ between pyroute2 versions
        module.fail_json(msg="reading the overlay state of %s failed: %s" % (device, err),
                         exception=traceback.format_exc())
    subnet_env = read_subnet_env(module.params["subnet_file"])
    try:
        lease = _lease(subnet_env, state["device"], IPNetwork)
    except (AddrFormatError, ValueError) as err:
        module.fail_json(msg="%s: FLANNEL_SUBNET %r or FLANNEL_IPV6_SUBNET %r is not a CIDR: %s"
                         % (module.params["subnet_file"], subnet_env.get("FLANNEL_SUBNET"),
                            subnet_env.get("FLANNEL_IPV6_SUBNET"), err))
    result = dict(state, changed=False, subnet_env=subnet_env, lease=lease)
    if not module.params["wireguard"]:
        result["ipv6_device"] = state6
    if module.params["wireguard"]:
        result["wireguard"] = wireguard_state(state["device"]["kind"]) if state["device"] else None
    if module.params["peers"] is not None and module.params["wireguard"]:
        try:
            result["peers"], result["drift"] = compare_wireguard_peers(result["wireguard"], state,
                                                                       module.params["peers"], lease, IPNetwork)
        except (AddrFormatError, KeyError, ValueError, TypeError) as err:
            module.fail_json(msg="peers: each item needs subnet, public_ip and backend_data: %s" % err)
        result["in_sync"] = not result["drift"]
    elif module.params["peers"] is not None:
        peers, direct_routing = module.params["peers"], module.params["direct_routing"]
        try:
            own = IPNetwork(lease["subnet"]) if lease else None
            ipv6 = bool(lease and lease["ipv6_subnet"])  # this host's lease is dual-stack
            onlink, external_routes = {}, []
            if direct_routing:
                network = IPNetwork(lease["network"]) if lease and lease["network"] else None
                network6 = subnet_env.get("FLANNEL_IPV6_NETWORK") if ipv6 else None
                onlink, external_routes = direct_routing_view(peers, state, network, IPNetwork,
                                                              IPNetwork(network6) if network6 else None)
            result["peers"], result["drift"] = compare_peers(state, peers, own, IPNetwork, direct_routing, onlink,
                                                             external_routes, state6, ipv6)
        except (AddrFormatError, KeyError, ValueError, TypeError) as err:
            module.fail_json(msg="peers: each item needs subnet, public_ip and vtep_mac (and a valid ipv6_subnet "
                                 "when given): %s" % err)
        except netlink.NetlinkError as err:
            module.fail_json(msg="reading the routes to the peers failed: %s" % err,
                             exception=traceback.format_exc())
        result["in_sync"] = not result["drift"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
