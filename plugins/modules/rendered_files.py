#!/usr/bin/python
# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: rendered_files
short_description: Install a set of files whose content was rendered on the controller, in one module run
version_added: 1.0.0
description:
  - Writes each file whose content differs (atomically, through a temporary file in its directory) and sets
    its owner, group and mode, as M(ansible.builtin.copy) with O(ansible.builtin.copy#module:content) does
    for one file.
  - A role's configuration files cost one module run on the host in all, where a M(ansible.builtin.template)
    or M(ansible.builtin.copy) per file costs two each (a stat, then a file module run), even when
    nothing changes.
  - Render the content on the controller, for example with P(ansible.builtin.template#lookup).
  - The result lists the files that changed, so that a task can notify several handlers and each handler
    can run only for its own files.
extends_documentation_fragment:
  - netlab.flannel._attributes
  - netlab.flannel._attributes.CHANGING_MODULE
attributes:
  check_mode:
    details: Reports the files it would write and the attributes it would set, and changes nothing.
  diff_mode:
    details: One diff per changed file (its content, then its owner, group or mode); none of a file's
      content given as O(files[].secret_content).
options:
  files:
    description:
      - The files to install. Their directories must exist.
      - Each entry gives exactly one of O(files[].content) and O(files[].secret_content).
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path of the file on the host.
        type: path
        required: true
      content:
        description: The file's whole content (text, written as UTF-8).
        type: str
      secret_content:
        description:
          - The file's whole content when it holds a secret (a password, a key), kept out of the output, the
            logs and the diff.
        type: str
      owner:
        description: Owner of the file; unchanged when not given.
        type: str
      group:
        description: Group of the file; unchanged when not given.
        type: str
      mode:
        description: Permissions of the file, as for M(ansible.builtin.file), for example V('0644').
        type: raw
author:
  - netlab.flannel developers (@netlab)
seealso:
  - module: ansible.builtin.copy
  - module: ansible.builtin.template
"""

EXAMPLES = r"""
- name: Install the agent's environment file and unit
  netlab.flannel.rendered_files:
    files:
      - path: /etc/default/flanneld
        secret_content: "{{ lookup('ansible.builtin.template', 'flanneld.env.j2') }}"
        owner: root
        group: root
        mode: "0600"
      - path: /etc/systemd/system/flanneld.service
        content: "{{ lookup('ansible.builtin.template', 'flanneld.service.j2') }}"
        owner: root
        group: root
        mode: "0644"
  register: agent_files
  notify: restart flanneld
"""

RETURN = r"""
changed_files:
  description: The paths whose content or attributes changed (in check mode, would change), in the order given.
  returned: success
  type: list
  elements: str
  sample: [/etc/systemd/system/flanneld.service]
content_changed:
  description: The paths whose content changed (in check mode, would change), in the order given.
  returned: success
  type: list
  elements: str
  sample: [/etc/systemd/system/flanneld.service]
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_text


def _current_content(path):
    """The file's bytes, or None when there is no such file."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _write(module, path, data):
    """Replace the file in one rename, so that a reader never sees half of it."""
    handle, temporary = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=os.path.dirname(path))
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        module.atomic_move(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def install(module, entry):
    """(content changed, attributes changed, diffs) for one entry; writes unless in check mode."""
    path = entry["path"]
    secret = entry["secret_content"] is not None
    data = to_bytes(entry["secret_content"] if secret else entry["content"], errors="surrogate_or_strict")
    before = _current_content(path)
    diffs = []
    content_changed = before != data
    if content_changed:
        if not secret:
            diffs.append({"before_header": path, "after_header": path,
                          "before": "" if before is None else to_text(before, errors="surrogate_or_strict"),
                          "after": to_text(data, errors="surrogate_or_strict")})
        if module.check_mode:
            # A new file would get exactly the attributes asked for; nothing more to compare.
            return True, False, diffs
        _write(module, path, data)
    file_args = {"path": path, "owner": entry["owner"], "group": entry["group"], "mode": entry["mode"],
                 "secontext": [None, None, None], "attributes": None}
    attribute_diff = {"before": {"path": path}, "after": {"path": path}}
    attributes_changed = module.set_fs_attributes_if_different(file_args, False, attribute_diff)
    if attributes_changed:
        diffs.append(attribute_diff)
    return content_changed, attributes_changed, diffs


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="dict", required=True, options=dict(
                path=dict(type="path", required=True),
                content=dict(type="str"),
                secret_content=dict(type="str", no_log=True),
                owner=dict(type="str"),
                group=dict(type="str"),
                mode=dict(type="raw"),
            ), mutually_exclusive=[("content", "secret_content")],
                required_one_of=[("content", "secret_content")]),
        ),
        supports_check_mode=True,
    )
    relative = [entry["path"] for entry in module.params["files"] if not os.path.isabs(entry["path"])]
    if relative:
        module.fail_json(msg="files: each path must be absolute, got %s" % ", ".join(relative))
    paths = [entry["path"] for entry in module.params["files"]]
    repeated = sorted({path for path in paths if paths.count(path) > 1})
    if repeated:
        module.fail_json(msg="files: each path may be given once, got %s more than once" % ", ".join(repeated))
    # Checked before any file is written, so that a bad entry changes nothing. In check mode an earlier
    # task may not have made the directory yet.
    missing = [path for path in paths if not os.path.isdir(os.path.dirname(path))]
    if missing and not module.check_mode:
        module.fail_json(msg="files: the directory of each path must exist, missing for %s" % ", ".join(missing))
    changed_files, content_changed, diffs = [], [], []
    for entry in module.params["files"]:
        content, attributes, file_diffs = install(module, entry)
        if content or attributes:
            changed_files.append(entry["path"])
        if content:
            content_changed.append(entry["path"])
        diffs.extend(file_diffs)
    result = dict(changed=bool(changed_files), changed_files=changed_files, content_changed=content_changed)
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
