# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Controller side of netlab.flannel.network_config: validate, then let the module write.

The config is validated here, with the agent's own parser, before any host or etcd is contacted.
The etcd I/O runs in the module on the task's (usually delegated) host, because only that host
is guaranteed to reach the etcd endpoints.
"""

from __future__ import annotations

import json

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.netlab.flannel.plugins.module_utils._etcd_module import (
    ETCD_ARGUMENT_SPEC,
    ETCD_OPTION_NAMES,
    ETCD_REQUIRED_TOGETHER,
    NETWORK_CONFIG_ARGUMENT_SPEC,
)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel import missing_libraries

MODULE = "netlab.flannel.network_config"
LEASES_MODULE = "netlab.flannel.lease_info"

ARGUMENT_SPEC = dict(NETWORK_CONFIG_ARGUMENT_SPEC)
# The modules' etcd options without their defaults: an option the task leaves unset is not
# passed on, so the module (and any module_defaults for it) decides.
ARGUMENT_SPEC.update((name, dict((key, value) for key, value in spec.items() if key != "default"))
                     for name, spec in ETCD_ARGUMENT_SPEC.items())


def _plain(value):
    """Templated data as plain JSON types (2.19 hands plugins tagged str/dict subclasses)."""
    return json.loads(json.dumps(value))


def _failure(err, name):
    return dict(failed=True, key=err.key, rule=err.rule, msg=err.under(name))


def check_config_bounds(config, name):
    """A failure dict when the config is too big or too deep to pass through Ansible's argument
    validation (which deep-copies it), else None."""
    if missing_libraries(["netaddr"]):
        return None  # validate_config reports it
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config_json import ConfigError, check_bounds

    try:
        check_bounds(config)
    except ConfigError as err:
        return _failure(err, name)
    return None


def validate_config(config, name, host_addresses=None):
    """(effective config dict, None) or (None, failure dict) for a config given as dict or JSON text.

    Size and depth are checked before anything walks the data, so a hostile value fails here.
    """
    missing = missing_libraries(["netaddr"])
    if missing:
        return None, dict(failed=True, msg="the controller needs the Python library %s to validate %s"
                                           % (" and ".join(missing), name))
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import (
        ConfigError,
        check_host_addresses,
        parse_network_config,
    )

    try:
        parsed = parse_network_config(config)
        check_host_addresses(parsed, host_addresses)
        return parsed.shown(), None  # a secret (the wireguard PSK) masked
    except ConfigError as err:
        return None, _failure(err, name)


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp

        name = self._task.args.get("config_name")
        failure = check_config_bounds(self._task.args.get("config"), name if isinstance(name, str) else "config")
        if failure:
            result.update(failure)
            return result
        try:
            dummy, args = self.validate_argument_spec(
                argument_spec=ARGUMENT_SPEC,
                required_together=ETCD_REQUIRED_TOGETHER)
        except AnsibleActionFail as err:
            result.update(err.result)
            return result

        effective, failure = validate_config(args["config"], args["config_name"], args["host_addresses"])
        if failure:
            result.update(failure)
            return result
        if args["validate_only"]:
            result.update(changed=False, config=effective)
            return result

        etcd_args = dict((name, args[name]) for name in ETCD_OPTION_NAMES if args[name] is not None)
        config = args["config"] if isinstance(args["config"], (str, bytes)) else _plain(args["config"])
        module_args = dict(etcd_args, config=config, config_name=args["config_name"],
                           host_addresses=_plain(args["host_addresses"]))
        try:
            result.update(self._execute_module(module_name=MODULE, module_args=module_args,
                                               task_vars=task_vars))
            if args["report_leases"] and not result.get("failed"):
                listing = self._execute_module(module_name=LEASES_MODULE, module_args=etcd_args,
                                               task_vars=task_vars)
                if listing.get("failed"):
                    result.update(failed=True, msg="listing the leases after the config step failed: %s"
                                                   % listing.get("msg"))
                else:
                    result["leases"] = listing["leases"]
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
