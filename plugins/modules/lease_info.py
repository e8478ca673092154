#!/usr/bin/python
# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: lease_info
short_description: List the flannel subnet leases and the network config stored in etcd
version_added: 1.0.0
description:
  - Reads C(<prefix>/subnets) and C(<prefix>/config) from etcd with a quorum read and returns every lease
    (subnet, public IP, backend type, VTEP MAC, TTL) and the effective network config.
  - Fails when no etcd endpoint answers, so it doubles as a reachability check from the host it runs on.
  - Keys under C(<prefix>/subnets) that are not valid leases are returned in RV(skipped), not as errors.
extends_documentation_fragment:
  - netlab.flannel._etcd
  - netlab.flannel._attributes
  - netlab.flannel._attributes.INFO_MODULE
options: {}
author:
  - netlab.flannel developers (@netlab)
seealso:
  - module: netlab.flannel.network_config
  - module: netlab.flannel.lease
"""

EXAMPLES = r"""
- name: List the leases of the lab's overlay
  netlab.flannel.lease_info:
    endpoints: http://192.168.205.10:2379
  delegate_to: "{{ groups['etcd'][0] }}"
  run_once: true
  register: flannel_leases

- name: Show which host holds which subnet
  ansible.builtin.debug:
    msg: "{{ flannel_leases.leases | items2dict(key_name='public_ip', value_name='subnet') }}"
"""

RETURN = r"""
leases:
  description: The valid leases, sorted by subnet.
  returned: success
  type: list
  elements: dict
  contains:
    subnet:
      description: The leased subnet.
      type: str
      sample: 10.15.64.0/20
    key:
      description: The lease's etcd key.
      type: str
      sample: /coreos.com/network/subnets/10.15.64.0-20
    ipv6_subnet:
      description: The IPv6 subnet a dual-stack lease's key names too (key V(10.15.64.0-20&fd00:10:0:5::-64)), V(null) on an IPv4-only lease.
      type: str
      sample: fd00:10:0:5::/64
    public_ip:
      description: The address the holder publishes (its VXLAN endpoint).
      type: str
      sample: 192.168.205.10
    public_ipv6:
      description: The IPv6 address a dual-stack lease publishes (C(PublicIPv6)), V(null) when none.
      type: str
      sample: fd00:205::10
    backend_type:
      description: The holder's backend, V(null) for udp-style leases.
      type: str
      sample: vxlan
    vtep_mac:
      description: The MAC address of the holder's VXLAN device, V(null) for other backends.
      type: str
      sample: 9e:61:5b:8a:30:10
    vtep_mac_v6:
      description: The MAC address of the holder's C(flannel-v6.<VNI>) device (C(BackendV6Data)), V(null) when none.
      type: str
      sample: 6a:2f:0c:11:94:b3
    backend_data:
      description: The lease's C(BackendData) for backends other than vxlan, as stored (wireguard's C(PublicKey) and C(Port)); V(null) when it has none.
      type: raw
      sample: {PublicKey: 1Vdo6d+P3ZMzVLlXmpbxnmd0uTaVpcJBCW+AIyTF0WM=, Port: 51820}
    ttl:
      description: Seconds left before etcd expires the lease; V(null) for a reservation (no TTL).
      type: int
      sample: 86120
    modified_index:
      description: etcd's modification index of the lease.
      type: int
      sample: 42
skipped:
  description: Keys under C(<prefix>/subnets) that are not leases, with the reason.
  returned: success
  type: list
  elements: dict
  sample: [{key: /coreos.com/network/subnets/junk, reason: "not a subnet lease key: '/coreos.com/network/subnets/junk'"}]
index:
  description: etcd's index at the time of the listing.
  returned: success
  type: int
  sample: 57
config:
  description:
    - The effective stored network config, or V(null) when none is stored or it is invalid.
    - A secret (the wireguard C(Backend.PSK)) shows as V((set, not shown)).
  returned: success
  type: dict
  sample: {Network: 10.0.0.0/8, SubnetLen: 20, SubnetMin: 10.10.0.0, SubnetMax: 10.99.0.0, Backend: {Type: vxlan}}
config_digest:
  description:
    - Names the effective stored config (12 hex digits); an agent of this collection reports the config
      it runs on as C(config in force <digest>) on C(/healthz), so equal digests mean the stored config is in force.
    - V(null) when none is stored or it is invalid.
  returned: success
  type: str
  sample: 3fa2c9d1e0ab
config_error:
  description: Why the stored config is missing or invalid; V(null) when it is valid.
  returned: success
  type: str
  sample: "/coreos.com/network/config does not exist in etcd (written with the v3 API? flannel reads v2)"
"""


from ansible_collections.netlab.flannel.plugins.module_utils._etcd_module import (
    etcd_failures,
    etcd_module,
    lease_to_dict,
    open_registry,
)


def main():
    module = etcd_module()
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import (
        ConfigError,
        parse_network_config,
    )
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import (
        ConfigMissing,
    )

    registry = open_registry(module)
    with etcd_failures(module):
        listing = registry.list_leases()
        config, config_digest, config_error = None, None, None
        try:
            # As the agent reads it: keys another tool added are ignored.
            parsed = parse_network_config(registry.get_config(), strict=False)
            module.no_log_values.update(parsed.secrets())  # the wireguard PSK, masked in the result
            config, config_digest = parsed.shown(), parsed.digest()
        except (ConfigMissing, ConfigError) as err:
            config_error = str(err)
    leases = sorted(listing.leases, key=lambda lease: (lease.subnet.first, lease.subnet.prefixlen))
    module.exit_json(
        changed=False,
        leases=[lease_to_dict(lease, registry) for lease in leases],
        skipped=[dict(key=key, reason=reason) for key, reason in listing.skipped],
        index=listing.index,
        config=config,
        config_digest=config_digest,
        config_error=config_error,
    )


if __name__ == "__main__":
    main()
