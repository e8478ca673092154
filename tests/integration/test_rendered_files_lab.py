"""A role's files written by netlab.flannel.rendered_files still notify their own handlers.

On the lab (under its lock), the forward role on its first node, which writes its sysctl file and its
docker.service drop-in in one module run: the drop-in edited on the node is written back and systemd
reloaded (its NeedDaemonReload goes back to no), the sysctl handler skipped; then the sysctl file's
mode changed: it is set back and only the sysctl handler runs. A last run changes nothing.
"""

import os
import re

from support.labtools import NODE1, PLAYBOOKS, docker_exec, ensure_lab
from test_upstream_agent import run_ok

ROLE = os.path.join(PLAYBOOKS, "role.yml")
NODE = NODE1
DROPIN = "/etc/systemd/system/docker.service.d/60-netlab-forward.conf"
SYSCTL = "/etc/sysctl.d/60-netlab-forward.conf"
SYSCTL_HANDLER = "Apply the forwarding sysctl"
RELOAD_HANDLER = "Reload systemd units for the docker drop-in"


def run_forward_role():
    return run_ok(ROLE, {"integration_role": "forward", "integration_hosts": NODE})


def handler_status(output, name):
    """What the handler reported on the node (changed, skipping, ok), or None when it was not notified."""
    found = re.search(r"RUNNING HANDLER \[netlab\.flannel\.forward : %s\] \**\s*(\w+): \[%s\]"
                      % (re.escape(name), NODE), output)
    return found.group(1) if found else None


def needs_daemon_reload():
    return docker_exec(NODE, "systemctl show docker -p NeedDaemonReload --value").strip()


def test_a_changed_file_notifies_only_its_handler(lab):
    with lab():
        ensure_lab()
        dropin = docker_exec(NODE, "cat " + DROPIN)
        docker_exec(NODE, "echo '# edited by hand' >> " + DROPIN)
        assert needs_daemon_reload() == "yes"
        output = run_forward_role()
        # systemd_service reports a daemon-reload alone as ok, not changed.
        assert handler_status(output, RELOAD_HANDLER) == "ok", output[-3000:]
        assert handler_status(output, SYSCTL_HANDLER) == "skipping", output[-3000:]
        assert docker_exec(NODE, "cat " + DROPIN) == dropin
        assert needs_daemon_reload() == "no"

        docker_exec(NODE, "chmod 0600 " + SYSCTL)
        output = run_forward_role()
        assert handler_status(output, SYSCTL_HANDLER) == "changed", output[-3000:]
        assert handler_status(output, RELOAD_HANDLER) == "skipping", output[-3000:]
        assert docker_exec(NODE, "stat -c %a " + SYSCTL).strip() == "644"

        output = run_forward_role()
        assert "changed=0" in output, output[-3000:]
        assert handler_status(output, SYSCTL_HANDLER) is None
        assert handler_status(output, RELOAD_HANDLER) is None
