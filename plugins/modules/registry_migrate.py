#!/usr/bin/python
# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: registry_migrate
short_description: Copy the flannel network config and live leases from etcd's v2 API to its v3 API
version_added: 1.1.0
description:
  - Reads C(<prefix>/config) and every lease under C(<prefix>/subnets) through the v2 API and writes what the
    v3 keyspace lacks, with the same keys and JSON; each lease keeps its remaining TTL (as a new etcd lease),
    a lease without TTL (an operator's reservation) stays without one.
  - Agents switched to C(-etcd-api=v3) afterwards find their own lease by public IP and keep their subnet.
  - A lease already in v3 with the same value is left alone; one with another value is left alone and reported
    in RV(conflicts). A v3 config that differs from the v2 one is replaced by it. A second run changes nothing.
  - Leases that fail the agent's checks (see M(netlab.flannel.lease_info)) are not copied; they are reported in RV(skipped).
extends_documentation_fragment:
  - netlab.flannel._etcd
  - netlab.flannel._attributes
  - netlab.flannel._attributes.CHANGING_MODULE
attributes:
  check_mode:
    details: Reports what it would copy.
  diff_mode:
    details: The v3 config and lease keys before and after.
notes:
  - Both APIs are read and written on the same O(endpoints), so etcd must serve v2 while this runs (C(--enable-v2=true)).
  - O(etcd_api) must be V(v3), the API written to.
author:
  - netlab.flannel developers (@netlab)
seealso:
  - module: netlab.flannel.lease_info
"""

EXAMPLES = r"""
- name: Copy the network config and the live leases to etcd's v3 API
  netlab.flannel.registry_migrate:
    etcd_api: v3
    endpoints: http://192.168.205.10:2379
  delegate_to: "{{ groups['etcd'][0] }}"
  run_once: true
"""

RETURN = r"""
config_copied:
  description: Whether the v3 config was written (it was missing or differed).
  returned: success
  type: bool
  sample: true
copied:
  description: The leases written to v3, with the TTL they got (V(null) for a reservation).
  returned: success
  type: list
  elements: dict
  sample: [{subnet: 10.15.64.0/20, public_ip: 192.168.205.10, ttl: 86102}]
unchanged:
  description: The subnets whose v3 lease already held the v2 value.
  returned: success
  type: list
  elements: str
  sample: [10.33.16.0/20]
conflicts:
  description: Subnets whose v3 lease holds another value than v2's; left as they are.
  returned: success
  type: list
  elements: dict
  sample: [{subnet: 10.15.64.0/20, v2: '{"PublicIP":"192.168.205.10"}', v3: '{"PublicIP":"192.168.205.12"}'}]
skipped:
  description: v2 keys under C(<prefix>/subnets) that are not valid leases, and why; not copied.
  returned: success
  type: list
  elements: dict
  sample: [{key: /coreos.com/network/subnets/junk, reason: "not a subnet lease key: '/coreos.com/network/subnets/junk'"}]
"""


from ansible_collections.netlab.flannel.plugins.module_utils._etcd_module import (
    etcd_failures,
    etcd_module,
    open_registry,
    pretty_json,
)


def main():
    module = etcd_module()
    if module.params["etcd_api"] != "v3":
        module.fail_json(msg="etcd_api: must be v3, the API the registry is copied to (it is read through v2)")
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import (
        ConfigMissing,
        make_registry,
    )

    target = open_registry(module)
    params = module.params
    source = make_registry("v2", endpoints=params["endpoints"], prefix=params["prefix"], ca_file=params["ca_file"],
                           cert_file=params["cert_file"], key_file=params["key_file"], username=params["username"],
                           password=params["password"], timeout=params["timeout"])
    result = dict(changed=False, config_copied=False, copied=[], unchanged=[], conflicts=[], skipped=[])
    with etcd_failures(module, result):
        try:
            config = source.get_config()
        except ConfigMissing:
            config = None
        try:
            stored_config = target.get_config()
        except ConfigMissing:
            stored_config = None
        listing = source.list_leases()
        result["skipped"] = [dict(key=key, reason=reason) for key, reason in listing.skipped]
        present = dict((lease.subnet, lease) for lease in target.list_leases().leases)
        copied_keys = []
        before_keys = sorted(target.key_of(lease) for lease in present.values())
        if config is not None and config != stored_config:
            result["config_copied"] = True
            if not module.check_mode:
                target.put_config(config)
        for lease in sorted(listing.leases, key=lambda item: item.subnet.first):
            held = present.get(lease.subnet)
            if held is not None:
                if held.attrs == lease.attrs:
                    result["unchanged"].append(str(lease.subnet))
                else:
                    result["conflicts"].append(dict(subnet=str(lease.subnet), v2=lease.attrs.to_json(),
                                                    v3=held.attrs.to_json()))
                continue
            # The TTL left in v2, so that a lease of a host that is gone still runs out on time.
            ttl = None if lease.is_reservation else max(int(lease.ttl), 1)
            ipv6 = {"ipv6_subnet": lease.ipv6_subnet} if lease.ipv6_subnet is not None else {}
            if not module.check_mode and target.create_lease(lease.subnet, lease.attrs, ttl, **ipv6) is None:
                module.fail_json(msg="%s appeared in v3 while it was copied: run again" % target.key_of(lease),
                                 **result)
            result["copied"].append(dict(subnet=str(lease.subnet), public_ip=lease.attrs.public_ip, ttl=ttl))
            copied_keys.append(target.key_of(lease))
        target.close()
    result["changed"] = bool(result["config_copied"] or result["copied"])
    if module._diff:
        after_keys = sorted(before_keys + copied_keys)
        result["diff"] = [
            dict(before_header=target.config_key, after_header=target.config_key,
                 before=stored_config or "", after=(config if result["config_copied"] else stored_config) or ""),
            dict(before_header=target.subnets_key, after_header=target.subnets_key,
                 before=pretty_json(before_keys), after=pretty_json(after_keys)),
        ]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
