# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A value quoted for a systemd EnvironmentFile= line, read back by systemd byte for byte."""

from __future__ import annotations

DOCUMENTATION = r"""
name: systemd_env_value
author: netlab.flannel developers
version_added: 1.0.0
short_description: Quote a value for a systemd EnvironmentFile line
description:
  - Returns the value in double quotes with C(\) and C(") escaped, as systemd reads an
    C(EnvironmentFile=) line (C(NAME="value")), so that the service receives exactly the value, edge spaces,
    quotes, backslashes, C($), C(%), C(#) and C(;) included (systemd expands neither C($) nor C(%) in
    such a file).
  - A value systemd cannot pass on unchanged fails, saying why; see P(netlab.flannel.systemd_carry_problems#filter)
    (control characters other than tab, such as a newline or NUL; text that is not UTF-8).
  - The flanneld role writes every value of the agent's environment file with it.
options:
  _input:
    description: The value; numbers are written as their text.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Write the agent's environment file
  ansible.builtin.copy:
    dest: /etc/default/flanneld
    content: "FLANNELD_ETCD_PASSWORD={{ flanneld_etcd_password | netlab.flannel.systemd_env_value }}\n"
    mode: "0600"
"""

RETURN = r"""
_value:
  description: The value in double quotes, C(\) and C(") escaped.
  type: str
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.netlab.flannel.plugins.plugin_utils.systemd_values import env_file_value


def systemd_env_value(value):
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise AnsibleFilterError("systemd_env_value: needs a string or a number, got %s" % type(value).__name__)
    try:
        return env_file_value(value)
    except ValueError as err:
        raise AnsibleFilterError("systemd_env_value: the value %s" % err)


class FilterModule:

    def filters(self):
        return {"systemd_env_value": systemd_env_value}
