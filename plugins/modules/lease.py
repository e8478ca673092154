#!/usr/bin/python
# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: lease
short_description: Remove flannel subnet leases from etcd
version_added: 1.0.0
description:
  - Deletes the leases under C(<prefix>/subnets) held by the given public IPs or covering the given subnets,
    for example when a host leaves the overlay.
  - Every delete is conditional on the lease being unchanged since it was read, so a lease that an agent
    renews at the same moment is read again instead of being lost silently.
  - Stop the host's agent first; a running agent re-creates its lease.
extends_documentation_fragment:
  - netlab.flannel._etcd
  - netlab.flannel._attributes
  - netlab.flannel._attributes.CHANGING_MODULE
attributes:
  check_mode:
    details: Reports the leases it would remove.
  diff_mode:
    details: The lease keys before and after.
options:
  state:
    description:
      - V(absent) removes the matching leases. Leases are created only by the agent, never by this module.
    type: str
    choices: [absent]
    default: absent
  public_ip:
    description: Remove the leases whose C(PublicIP) is one of these addresses.
    type: list
    elements: str
    default: []
  subnet:
    description: Remove the leases of these subnets (CIDR, for example V(10.15.64.0/20)).
    type: list
    elements: str
    default: []
author:
  - netlab.flannel developers (@netlab)
seealso:
  - module: netlab.flannel.lease_info
"""

EXAMPLES = r"""
- name: Release the lease of a host that leaves the overlay
  netlab.flannel.lease:
    endpoints: http://192.168.205.10:2379
    public_ip: "{{ netlab_lab_address }}"
    state: absent
  delegate_to: "{{ groups['etcd'][0] }}"
"""

RETURN = r"""
removed:
  description: The leases removed (or, in check mode, that would be removed), as M(netlab.flannel.lease_info) lists them.
  returned: success
  type: list
  elements: dict
  sample:
    - subnet: 10.15.64.0/20
      key: /coreos.com/network/subnets/10.15.64.0-20
      ipv6_subnet: null
      public_ip: 192.168.205.10
      public_ipv6: null
      backend_type: vxlan
      vtep_mac: 9e:61:5b:8a:30:10
      ttl: 86120
      modified_index: 42
"""


from ansible_collections.netlab.flannel.plugins.module_utils._etcd_module import (
    etcd_failures,
    etcd_module,
    lease_to_dict,
    open_registry,
)

ATTEMPTS = 5


def main():
    argument_spec = dict(
        state=dict(type="str", choices=["absent"], default="absent"),
        public_ip=dict(type="list", elements="str", default=[]),
        subnet=dict(type="list", elements="str", default=[]),
    )
    module = etcd_module(argument_spec, required_one_of=[("public_ip", "subnet")])
    from netaddr import AddrFormatError, IPAddress, IPNetwork

    if not module.params["public_ip"] and not module.params["subnet"]:
        module.fail_json(msg="one of public_ip or subnet must name at least one lease")
    try:
        public_ips = set(str(IPAddress(value)) for value in module.params["public_ip"])
    except (AddrFormatError, ValueError) as err:
        module.fail_json(msg="public_ip: must be a list of IP addresses: %s" % err)
    try:
        subnets = set(IPNetwork(value).cidr for value in module.params["subnet"])
    except (AddrFormatError, ValueError) as err:
        module.fail_json(msg="subnet: must be a list of CIDRs such as 10.15.64.0/20: %s" % err)

    def matches(lease):
        return lease.attrs.public_ip in public_ips or lease.subnet in subnets

    registry = open_registry(module)
    removed, before_keys = {}, None
    with etcd_failures(module):
        for dummy in range(ATTEMPTS):
            listing = registry.list_leases()
            if before_keys is None:
                before_keys = sorted(registry.key_of(lease) for lease in listing.leases)
            targets = [lease for lease in listing.leases if matches(lease)]
            if not targets:
                break
            if module.check_mode:
                removed.update((str(lease.subnet), lease_to_dict(lease, registry)) for lease in targets)
                break
            lost_race = False
            for lease in targets:
                if registry.delete_lease(lease):
                    removed[str(lease.subnet)] = lease_to_dict(lease, registry)
                else:  # renewed or deleted since the listing: look again
                    lost_race = True
            if not lost_race:
                break
        else:
            module.fail_json(msg="leases kept changing while being removed (is the agent still running?): %s"
                             % ", ".join(str(lease.subnet) for lease in targets))

    result = dict(changed=bool(removed), removed=[removed[key] for key in sorted(removed)])
    if module._diff and removed:
        gone = set(lease["key"] for lease in removed.values())
        result["diff"] = dict(before="\n".join(before_keys) + "\n",
                              after="".join(key + "\n" for key in before_keys if key not in gone))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
