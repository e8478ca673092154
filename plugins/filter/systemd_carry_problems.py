# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The variables whose values systemd cannot pass to a service unchanged, each with the reason."""

from __future__ import annotations

DOCUMENTATION = r"""
name: systemd_carry_problems
author: netlab.flannel developers
version_added: 1.0.0
short_description: Name the variables whose values systemd cannot pass to a service unchanged
description:
  - Takes a mapping of variable names to their values (a value may be a list) and returns one line
    per variable holding a value systemd cannot pass to a service unchanged, through a unit's
    command line or its environment file, naming the variable and the character.
  - Refused are control characters other than tab (a NUL ends the value, a newline or carriage
    return ends a line of the unit, and older systemd releases drop a variable holding any other)
    and text that is not UTF-8.
  - The flanneld role checks its flags and environment with it before it changes anything.
options:
  _input:
    description: Variable names and their values (strings, numbers, or lists of them).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Refuse values the agent's unit cannot carry
  ansible.builtin.assert:
    that: __problems | length == 0
    fail_msg: "{{ __problems | join('; ') }}"
  vars:
    __problems: "{{ {'flanneld_etcd_password': flanneld_etcd_password} | netlab.flannel.systemd_carry_problems }}"
"""

RETURN = r"""
_value:
  description:
    - >-
      One line per refused variable, in the input's order, such as
      C(flanneld_etcd_password: holds a newline, which systemd cannot pass to the agent unchanged).
  type: list
  elements: str
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.netlab.flannel.plugins.plugin_utils.systemd_values import carry_problem


def systemd_carry_problems(variables):
    if not isinstance(variables, Mapping):
        raise AnsibleFilterError("systemd_carry_problems: needs a mapping of variable names to values, got %s"
                                 % type(variables).__name__)
    problems = []
    for name, value in variables.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for problem in (carry_problem(item) for item in values if item is not None):
            if problem:
                problems.append("%s: %s" % (name, problem))
                break
    return problems


class FilterModule:

    def filters(self):
        return {"systemd_carry_problems": systemd_carry_problems}
