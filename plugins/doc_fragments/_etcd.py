# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# This doc fragment is PRIVATE to the collection: it may change without notice.

from __future__ import annotations


class ModuleDocFragment:

    # The etcd connection shared by every plugin in the netlab.flannel.etcd action group, and the
    # membership in that group.
    DOCUMENTATION = r"""
options:
  etcd_api:
    description:
      - The etcd API the config and leases are read and written through (the agent's C(-etcd-api)).
      - V(v2) is flanneld v0.10's; etcd 3.4 and 3.5 serve it only with C(--enable-v2=true).
      - V(v3) uses the same keys and JSON through etcd's v3 JSON gateway (C(/v3/...)), each lease held by an
        etcd lease; it works on an etcd with the v2 API off. The two APIs are separate keyspaces.
    type: str
    choices: [v2, v3]
    default: v2
  endpoints:
    description:
      - The etcd client URLs, as a list or as one comma-separated string (flanneld's C(-etcd-endpoints)).
      - Every URL must look like V(http://HOST:PORT) or V(https://HOST:PORT); the plugin fails over
        between them in order.
      - The URLs are dialled from the host the task runs on (or is delegated to), not from the controller.
    type: list
    elements: str
    default: [http://127.0.0.1:2379]
  prefix:
    description:
      - The etcd key prefix of the flannel network (flanneld's C(-etcd-prefix)).
      - The config lives at C(<prefix>/config) and the leases under C(<prefix>/subnets).
    type: str
    default: /coreos.com/network
  ca_file:
    description: CA bundle that signs the etcd servers' certificates (C(-etcd-cafile)), on the target.
    type: path
  cert_file:
    description: Client certificate for etcd (C(-etcd-certfile)), on the target.
    type: path
  key_file:
    description: Private key of O(cert_file) (C(-etcd-keyfile)), on the target.
    type: path
  username:
    description: etcd user name for basic authentication (C(-etcd-username)).
    type: str
  password:
    description: Password of O(username) (C(-etcd-password)).
    type: str
  timeout:
    description: Seconds to wait for each etcd request.
    type: float
    default: 5.0
requirements:
  - netaddr >= 0.8.0 on the host the task runs on, and python-etcd >= 0.4.5 for O(etcd_api=v2) or
    urllib3 >= 1.26 for O(etcd_api=v3).
notes:
  - With O(etcd_api=v2) (the default) the registry is read and written through etcd's v2 API, as flanneld up
    to v0.17 does; etcd 3.4 must run with C(--enable-v2=true).
attributes:
  action_group:
    description: Use C(group/netlab.flannel.etcd) in C(module_defaults) to set the etcd connection options once.
    support: full
    membership:
      - netlab.flannel.etcd
"""
