# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# This doc fragment is PRIVATE to the collection: it may change without notice.

from __future__ import annotations


class ModuleDocFragment:

    # The attributes every plugin of the collection declares; plugins set `support` and `details`.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and predict the change without modifying the target.
  diff_mode:
    description: Returns the before and after state of what it changes (or would change in check mode) in diff mode.
  idempotent:
    description:
      - When run twice in a row with the same arguments, the second run reports no change
        (outside check mode, and with nothing else changing the target in between).
"""

    # A module that changes its target, with full check mode, diff mode and idempotency; the module
    # says in each attribute's details what check mode reports and what the diff shows.
    CHANGING_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
"""

    # A read-only module.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: The module only reads, so it runs unchanged in check mode.
  diff_mode:
    support: N/A
    details: The module never changes anything.
  idempotent:
    support: full
"""
