#!/usr/bin/python
# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: network_config
short_description: Write the flannel network config to etcd, only when it differs
version_added: 1.0.0
description:
  - Validates a flannel network config (C(Network), C(SubnetLen), C(SubnetMin), C(SubnetMax), C(Backend), and the
    dual-stack keys C(EnableIPv6), C(IPv6Network), C(IPv6SubnetLen), C(IPv6SubnetMin), C(IPv6SubnetMax))
    with the same code the netlab.flannel agent uses, then stores it at C(<prefix>/config) in etcd.
  - Keys are case-insensitive, as flanneld reads them; an unknown key is refused, naming the closest known
    key. C(Network) must be a network address (no host bits, no surrounding whitespace) in IPv4 unicast
    space, not C(0.0.0.0/0), loopback, link-local, multicast or reserved. The config may be at most 64 KiB
    of JSON and nest at most 8 levels.
  - The stored config is compared semantically with the desired one (flanneld's defaults applied,
    keys case-insensitive, key order and spacing ignored); it is written only when they differ.
  - An action plugin of the same name runs on the controller first. It validates the config before
    anything is sent to a host, names the offending key and the rule it breaks, runs this module on the
    target (usually delegated to an etcd member) and, with O(report_leases=true), adds the cluster's leases
    from M(netlab.flannel.lease_info).
extends_documentation_fragment:
  - netlab.flannel._etcd
  - netlab.flannel._attributes
  - netlab.flannel._attributes.CHANGING_MODULE
attributes:
  check_mode:
    details: Reads the stored config and reports whether it would be written; writes nothing.
  diff_mode:
    details: The stored and the desired config as pretty JSON.
options:
  config:
    description:
      - >-
        The network config, as a dictionary or as JSON text, in flannel's spelling
        (for example V({"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan"}})).
      - Supported backends are V(vxlan), V(host-gw), V(udp) (the default when C(Backend) is absent, as in flanneld),
        V(wireguard) (C(ListenPort), default 51820; C(PSK), a C(wg genpsk) key; C(MTU), the underlay's;
        C(PersistentKeepaliveInterval), seconds, 0 off),
        V(extension) (the data plane made by the user's commands C(PreStartupCommand), C(PostStartupCommand),
        C(SubnetAddCommand) and C(SubnetRemoveCommand), each run without a shell unless it starts one, as in
        V(sh -c '...'), and C(CommandTimeout), seconds, default 30) and V(alloc) (leases only, no data plane).
      - It is stored as compact JSON of exactly the keys given; defaults are not added to it.
    type: raw
    required: true
  report_leases:
    description:
      - Also return the leases under C(<prefix>/subnets), read after the write.
      - Handled by the action plugin; the module itself ignores it.
    type: bool
    default: false
  validate_only:
    description:
      - Only validate O(config) on the controller and return the effective config; contact no host and no etcd.
      - Handled by the action plugin.
    type: bool
    default: false
  config_name:
    description:
      - How error messages name the config, for example the variable it came from.
      - Handled by the action plugin.
    type: str
    default: config
  host_addresses:
    description:
      - The hosts' own addresses, as host name to address (for example every inventory host's lab address).
      - A C(Network) that contains one of them is refused, naming the host, before anything is written.
      - Values that are not IPv4 addresses (host names, empty strings) are skipped.
    type: dict
    default: {}
author:
  - netlab.flannel developers (@netlab)
seealso:
  - module: netlab.flannel.lease_info
  - module: netlab.flannel.lease
"""

EXAMPLES = r"""
- name: Store the tutorial's network config through the first etcd member
  netlab.flannel.network_config:
    endpoints: http://192.168.205.10:2379,http://192.168.205.11:2379
    config:
      Network: 10.0.0.0/8
      SubnetLen: 20
      SubnetMin: 10.10.0.0
      SubnetMax: 10.99.0.0
      Backend:
        Type: vxlan
        VNI: 100
        Port: 8472
    report_leases: true
  delegate_to: "{{ groups['etcd'][0] }}"
  run_once: true
  register: flannel_config

- name: Validate a config on the controller without touching etcd
  netlab.flannel.network_config:
    config: '{"Network": "10.0.0.0/16", "Backend": {"Type": "host-gw"}}'
    validate_only: true
    config_name: my_flannel_config

- name: Set the etcd connection once for every etcd plugin of the collection
  module_defaults:
    group/netlab.flannel.etcd:
      endpoints: https://192.168.205.10:2379
      ca_file: /etc/flannel/ca.pem
      cert_file: /etc/flannel/client.pem
      key_file: /etc/flannel/client-key.pem
  block:
    - name: Store the config
      netlab.flannel.network_config:
        config: "{{ lookup('ansible.builtin.file', 'net-conf.json') }}"
      delegate_to: "{{ groups['etcd'][0] }}"
      run_once: true
"""

RETURN = r"""
config:
  description:
    - The effective desired config, flanneld's defaults applied, in flannel's spelling.
    - A secret (the wireguard C(Backend.PSK)) shows as V((set, not shown)); in every other value returned
      (RV(value), RV(previous), the diff) Ansible masks it.
  returned: success
  type: dict
  sample:
    Network: 10.0.0.0/8
    SubnetLen: 20
    SubnetMin: 10.10.0.0
    SubnetMax: 10.99.0.0
    Backend: {Type: vxlan, VNI: 100, Port: 8472, GBP: false, DirectRouting: false}
value:
  description: The JSON text that is (or, in check mode, would be) stored at RV(key) when the config changes.
  returned: success and not O(validate_only)
  type: str
  sample: '{"Network": "10.0.0.0/8", "SubnetLen": 20, "Backend": {"Type": "vxlan", "VNI": 100}}'
key:
  description: The etcd key of the config.
  returned: success and not O(validate_only)
  type: str
  sample: /coreos.com/network/config
previous:
  description: The text stored before the task ran; null when the key did not exist.
  returned: success and not O(validate_only)
  type: str
  sample: '{"Network": "10.0.0.0/16"}'
previous_error:
  description: Why the previously stored text is not a valid config (it is then replaced).
  returned: when the stored config was invalid
  type: str
  sample: 'Backend.Type: unknown backend type: "udp2"; use one of: vxlan, host-gw, udp, wireguard, extension, alloc'
leases:
  description: The leases under C(<prefix>/subnets), as M(netlab.flannel.lease_info) returns them.
  returned: when O(report_leases=true)
  type: list
  elements: dict
  sample:
    - subnet: 10.15.64.0/20
      key: /coreos.com/network/subnets/10.15.64.0-20
      public_ip: 192.168.205.10
      backend_type: vxlan
      vtep_mac: 9e:61:5b:8a:30:10
      ttl: 86120
      modified_index: 42
"""

import json

from ansible_collections.netlab.flannel.plugins.module_utils._etcd_module import (
    NETWORK_CONFIG_ARGUMENT_SPEC,
    etcd_failures,
    etcd_module,
    open_registry,
    pretty_json,
)


def _desired_value(config):
    """The JSON text to store: the given keys, compact, in the given order."""
    if isinstance(config, (str, bytes)):
        config = json.loads(config)
    return json.dumps(config, separators=(", ", ": "))


def _diff_text(text):
    """A stored value for the diff: pretty JSON when it parses, else as stored."""
    if text is None:
        return ""
    try:
        return pretty_json(json.loads(text))
    except ValueError:
        return text if text.endswith("\n") else text + "\n"


def main():
    module = etcd_module(NETWORK_CONFIG_ARGUMENT_SPEC)
    # Imported after the library check: these need netaddr and python-etcd.
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import (
        ConfigError,
        check_host_addresses,
        parse_network_config,
    )
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import (
        ConfigMissing,
    )

    name = module.params["config_name"]
    try:
        desired = parse_network_config(module.params["config"])
        check_host_addresses(desired, module.params["host_addresses"])
    except ConfigError as err:
        module.fail_json(msg=err.under(name), key=err.key, rule=err.rule)
    # A secret (the wireguard PSK) is masked wherever the result holds it: config, value, diff.
    module.no_log_values.update(desired.secrets())
    result = dict(changed=False, config=desired.shown())
    if module.params["validate_only"]:
        module.exit_json(**result)

    value = _desired_value(module.params["config"])
    registry = open_registry(module)
    result.update(key=registry.config_key, value=value, previous=None)
    with etcd_failures(module, result):
        try:
            result["previous"] = registry.get_config()
        except ConfigMissing:
            pass
        if result["previous"] is not None:
            try:
                # Read as the agent reads it: keys another tool added do not make it different.
                previous = parse_network_config(result["previous"], strict=False)
                module.no_log_values.update(previous.secrets())
                same = previous.as_dict() == desired.as_dict()
            except ConfigError as err:
                same = False
                result["previous_error"] = str(err)
        else:
            same = False
        if not same:
            result["changed"] = True
            if module._diff:
                result["diff"] = dict(before_header=registry.config_key, after_header=registry.config_key,
                                      before=_diff_text(result["previous"]), after=_diff_text(value))
            if not module.check_mode:
                registry.put_config(value)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
