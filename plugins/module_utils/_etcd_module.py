# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# PRIVATE to the collection: the etcd options and registry set-up shared by the modules of the
# netlab.flannel.etcd action group (documented by the doc fragment netlab.flannel._etcd).

from __future__ import annotations

import contextlib
import json
import sys
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.netlab.flannel.plugins.module_utils.flannel import missing_libraries
from ansible_collections.netlab.flannel.plugins.module_utils.flannel import registry

ETCD_ARGUMENT_SPEC = dict(
    etcd_api=dict(type="str", choices=list(registry.ETCD_APIS), default="v2"),
    endpoints=dict(type="list", elements="str", default=list(registry.DEFAULT_ENDPOINTS)),
    prefix=dict(type="str", default=registry.DEFAULT_PREFIX),
    ca_file=dict(type="path"),
    cert_file=dict(type="path"),
    key_file=dict(type="path"),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    timeout=dict(type="float", default=5.0),
)
ETCD_REQUIRED_TOGETHER = [("cert_file", "key_file"), ("username", "password")]
ETCD_OPTION_NAMES = tuple(ETCD_ARGUMENT_SPEC)
# netlab.flannel.network_config's own options, checked by its action plugin on the controller and
# again by the module on the host.
NETWORK_CONFIG_ARGUMENT_SPEC = dict(
    config=dict(type="raw", required=True),
    report_leases=dict(type="bool", default=False),
    validate_only=dict(type="bool", default=False),
    config_name=dict(type="str", default="config"),
    host_addresses=dict(type="dict", default={}),
)


def etcd_module(argument_spec=None, **kwargs):
    """The AnsibleModule of an etcd module: its own options plus the etcd ones, check mode
    supported, failed cleanly when python-etcd or netaddr is missing on the target."""
    module = AnsibleModule(argument_spec=dict(argument_spec or {}, **ETCD_ARGUMENT_SPEC),
                           required_together=ETCD_REQUIRED_TOGETHER, supports_check_mode=True, **kwargs)
    # python-etcd speaks v2; the v3 registry needs only urllib3.
    missing = missing_libraries(["etcd" if module.params["etcd_api"] == "v2" else "urllib3", "netaddr"])
    if missing:
        module.fail_json(msg=missing_required_lib(" and ".join(missing)))
    return module


def open_registry(module):
    """An EtcdRegistry from the module's etcd options; fails the module on a malformed endpoint."""
    params = module.params
    try:
        registry.parse_endpoints(params["endpoints"])
    except ValueError as err:
        module.fail_json(msg="endpoints: %s" % err)
    if params["prefix"].strip("/") == "":
        module.fail_json(msg="prefix: must name a key below the root, such as /coreos.com/network")
    return registry.make_registry(
        params["etcd_api"], endpoints=params["endpoints"], prefix=params["prefix"], ca_file=params["ca_file"],
        cert_file=params["cert_file"], key_file=params["key_file"], username=params["username"],
        password=params["password"], timeout=params["timeout"])


@contextlib.contextmanager
def etcd_failures(module, result=None):
    """Fail the module, naming the endpoints and the cause, when etcd cannot serve a request.

    `result` (a dict the block may still fill in) is returned with the failure.
    """
    endpoints = ", ".join(module.params["endpoints"])
    try:
        yield
    except registry.RegistryError as err:
        module.fail_json(msg="etcd at %s: %s" % (endpoints, err), **(result or {}))
    except _python_etcd_errors() as err:  # v2: refused writes, TLS
        module.fail_json(msg="etcd at %s: %s: %s" % (endpoints, type(err).__name__, err),
                         exception=traceback.format_exc(), **(result or {}))


def _python_etcd_errors():
    """python-etcd's own exceptions, which its registry (v2) passes on: none unless one loaded it."""
    return getattr(sys.modules.get("etcd"), "EtcdException", ())


def lease_to_dict(lease, prefix_registry):
    """A lease as module output: plain strings and numbers only."""
    return dict(
        subnet=str(lease.subnet),
        key=prefix_registry.key_of(lease),
        ipv6_subnet=str(lease.ipv6_subnet) if lease.ipv6_subnet is not None else None,
        public_ip=lease.attrs.public_ip,
        public_ipv6=lease.attrs.public_ipv6,
        backend_type=lease.attrs.backend_type,
        vtep_mac=lease.attrs.vtep_mac,
        vtep_mac_v6=lease.attrs.vtep_mac_v6,
        backend_data=lease.attrs.backend_data,
        ttl=lease.ttl,
        modified_index=lease.modified_index,
    )


def pretty_json(data):
    """Stable text for diffs: sorted keys, two-space indent, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
