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
      - Only C(subnet), C(public_ip) and C(vtep_mac) are used; a lease of this host's own subnet is ignored.
    type: list
    elements: dict
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
routes:
  description: The routes through the device.
  returned: always
  type: list
  elements: dict
  sample: [{dst: 10.13.48.0/20, gateway: 10.13.48.0, onlink: true}]
neighbours:
  description: The permanent neighbours on the device.
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
  returned: always
  type: dict
  sample: {network: 10.0.0.0/8, subnet: 10.15.64.0/20, address: 10.15.64.1/20, mtu: 1450, ipmasq: false,
           vtep_mac: 9e:61:5b:8a:30:10}
peers:
  description: Per peer lease, whether each expected kernel entry is present.
  returned: when O(peers) is given
  type: list
  elements: dict
  sample: [{subnet: 10.13.48.0/20, public_ip: 192.168.205.11, route: true, neighbour: true, fdb: true}]
drift:
  description: One line per missing or unexpected entry, empty when the kernel matches the leases.
  returned: when O(peers) is given
  type: list
  elements: str
  sample: ["10.13.48.0/20 (192.168.205.11): no FDB entry 2a:11:3b:5c:6d:7e dst 192.168.205.11"]
in_sync:
  description: Whether RV(drift) is empty.
  returned: when O(peers) is given
  type: bool
  sample: true
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.netlab.flannel.plugins.module_utils.flannel import missing_libraries


def _lease(subnet_env, device, ip_network):
    """This host's lease as module output, or None when there is no subnet file."""
    if not subnet_env.get("FLANNEL_SUBNET"):
        return None
    try:
        mtu = int(subnet_env.get("FLANNEL_MTU", ""))
    except ValueError:
        mtu = None
    return dict(network=subnet_env.get("FLANNEL_NETWORK"),
                subnet=str(ip_network(subnet_env["FLANNEL_SUBNET"]).cidr),
                address=subnet_env["FLANNEL_SUBNET"], mtu=mtu,
                ipmasq=subnet_env.get("FLANNEL_IPMASQ") == "true",
                vtep_mac=device["mac"] if device else None)


def compare_peers(state, peers, own_subnet, ip_network):
    """(per-peer status, drift lines) for the expected vxlan entries of each peer lease."""
    routes = dict((route["dst"], route) for route in state["routes"])
    neighbours = dict((entry["ip"], entry["mac"]) for entry in state["neighbours"])
    fdb = set((entry["mac"].lower(), entry["dst"]) for entry in state["fdb"])
    status, drift, expected_dsts = [], [], set()
    for peer in peers:
        subnet = ip_network(peer["subnet"]).cidr
        if own_subnet is not None and subnet == own_subnet:
            continue
        mac = (peer.get("vtep_mac") or "").lower()
        public_ip = peer.get("public_ip")
        gateway = str(subnet.ip)
        expected_dsts.add(str(subnet))
        label = "%s (%s)" % (subnet, public_ip)
        route = routes.get(str(subnet))
        route_ok = bool(route and route["gateway"] == gateway and route["onlink"])
        if not route_ok:
            drift.append("%s: %s route %s via %s onlink" % (
                label, "no" if route is None else "wrong", subnet, gateway))
        neighbour_ok = neighbours.get(gateway, "").lower() == mac
        if not neighbour_ok:
            drift.append("%s: %s neighbour %s lladdr %s" % (
                label, "no" if gateway not in neighbours else "wrong", gateway, mac))
        fdb_ok = (mac, public_ip) in fdb
        if not fdb_ok:
            drift.append("%s: no FDB entry %s dst %s" % (label, mac, public_ip))
        status.append(dict(subnet=str(subnet), public_ip=public_ip, route=route_ok, neighbour=neighbour_ok,
                           fdb=fdb_ok))
    for dst in sorted(set(routes) - expected_dsts):
        drift.append("route %s via %s matches no peer lease" % (dst, routes[dst]["gateway"]))
    return status, drift


def main():
    module = AnsibleModule(
        argument_spec=dict(
            vni=dict(type="int"),
            device=dict(type="str"),
            subnet_file=dict(type="path", default="/run/flannel/subnet.env"),
            peers=dict(type="list", elements="dict"),
        ),
        required_one_of=[("vni", "device")],
        mutually_exclusive=[("vni", "device")],
        supports_check_mode=True,
    )
    missing = missing_libraries(["pyroute2", "netaddr"])
    if missing:
        module.fail_json(msg=missing_required_lib(" and ".join(missing)))
    from netaddr import AddrFormatError, IPNetwork
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel import netlink
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.subnet_env import read_subnet_env

    if module.params["vni"] is not None and not 1 <= module.params["vni"] <= 2 ** 24 - 1:
        module.fail_json(msg="vni: must be between 1 and 16777215, got %d" % module.params["vni"])
    device = module.params["device"] if module.params["device"] else module.params["vni"]
    try:
        state = netlink.overlay_state(device)
    except Exception as err:  # netlink errors differ between pyroute2 versions
        module.fail_json(msg="reading the overlay state of %s failed: %s" % (device, err),
                         exception=traceback.format_exc())
    subnet_env = read_subnet_env(module.params["subnet_file"])
    try:
        lease = _lease(subnet_env, state["device"], IPNetwork)
    except (AddrFormatError, ValueError) as err:
        module.fail_json(msg="%s: FLANNEL_SUBNET %r is not a CIDR: %s"
                         % (module.params["subnet_file"], subnet_env.get("FLANNEL_SUBNET"), err))
    result = dict(state, changed=False, subnet_env=subnet_env, lease=lease)
    if module.params["peers"] is not None:
        try:
            own = IPNetwork(lease["subnet"]) if lease else None
            result["peers"], result["drift"] = compare_peers(state, module.params["peers"], own, IPNetwork)
        except (AddrFormatError, KeyError, ValueError, TypeError) as err:
            module.fail_json(msg="peers: each item needs subnet, public_ip and vtep_mac: %s" % err)
        result["in_sync"] = not result["drift"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
