# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The etcd client URLs of an inventory group: the one place the roles and playbooks build them."""

from __future__ import annotations

DOCUMENTATION = r"""
name: etcd_client_urls
author: netlab.flannel developers
version_added: 1.0.0
short_description: etcd client URLs of the members of an inventory group
description:
  - Turns inventory host names (the etcd members) into their client URLs, V(http://ADDRESS:PORT), or
    V(https://ADDRESS:PORT) with O(tls), where ADDRESS is the host's variable O(address_variable).
  - The roles' default C(-etcd-endpoints) and the playbooks' etcd connection come from it.
positional: hostvars, address_variable, port, tls
options:
  _input:
    description: Inventory host names of the etcd members, for example C(groups['etcd']).
    type: list
    elements: str
    required: true
  hostvars:
    description: The play's C(hostvars).
    type: dict
    required: true
  address_variable:
    description: The host variable holding each member's address.
    type: str
    default: netlab_lab_address
  port:
    description:
      - The etcd client port, a whole number from 1 to 65535 (digits in a string are taken too).
      - Anything else fails, naming the value, before any URL is built.
    type: int
    default: 2379
  tls:
    description: Whether etcd serves https.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Every etcd member's client URL, https when the lab runs etcd over TLS
  ansible.builtin.debug:
    msg: "{{ groups['etcd'] | netlab.flannel.etcd_client_urls(hostvars, 'netlab_lab_address', 2379, netlab_etcd_tls | default(false)) }}"
"""

RETURN = r"""
_value:
  description: One URL per host, in the order given.
  type: list
  elements: str
"""

import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean


def checked_port(port):
    """The port as an int, or an AnsibleFilterError naming the value and the rule."""
    # bool is an int to Python, and int() would also take 2379.5 or " 2379 ".
    whole = (isinstance(port, int) and not isinstance(port, bool)) or re.fullmatch("[0-9]+", str(port))
    if not whole or not 1 <= int(port) <= 65535:
        raise AnsibleFilterError("etcd_client_urls: port must be a whole number from 1 to 65535, got %r" % (port,))
    return int(port)


def etcd_client_urls(hosts, hostvars, address_variable="netlab_lab_address", port=2379, tls=False):
    """['http(s)://ADDRESS:PORT', ...] for the hosts, ADDRESS from each host's address_variable."""
    scheme = "https" if boolean(tls, strict=False) else "http"
    port = checked_port(port)
    urls = []
    for host in hosts:
        host_vars = hostvars.get(host) if hasattr(hostvars, "get") else None
        if host_vars is None or address_variable not in host_vars:
            raise AnsibleFilterError("%s: every etcd member needs the inventory variable '%s' (its address)"
                                     % (host, address_variable))
        urls.append("%s://%s:%d" % (scheme, host_vars[address_variable], port))
    return urls


class FilterModule:

    def filters(self):
        return {"etcd_client_urls": etcd_client_urls}
