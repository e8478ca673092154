"""The flanneld role installs its agent without a module run of its own only when the -check-flags
run found it in place (issue 21): on the lab (under its lock), the flanneld role on the first node,
its directory's and zipapp's modes changed and a file where upstream's binary would be: the role
sets both modes back, removes that file and restarts the agent; a second run changes nothing and
runs none of those three tasks.
"""

import os
import re

from support.labtools import INSTALLED_AGENT, NODE1, PLAYBOOKS, docker_exec, ensure_lab
from test_upstream_agent import run_ok

ROLE = os.path.join(PLAYBOOKS, "role.yml")
NODE = NODE1
AGENT_DIR = os.path.dirname(INSTALLED_AGENT)
UPSTREAM_FILE = os.path.join(AGENT_DIR, "flanneld")
TASKS = ("Create the agent's directory", "Install the agent (the collection's zipapp, or upstream's binary)",
         "Remove the other agent's file after a switch")


def run_flanneld_role():
    return run_ok(ROLE, {"integration_role": "flanneld", "integration_hosts": NODE})


def task_status(output, name):
    """What the task reported on the node (changed, ok, skipping)."""
    found = re.search(r"TASK \[netlab\.flannel\.flanneld : %s\] \**\s*(\w+): \[%s\]" % (re.escape(name), NODE), output)
    return found.group(1) if found else None


def test_an_agent_not_in_place_is_installed_again_and_one_in_place_costs_no_module_run(lab):
    with lab():
        ensure_lab()
        docker_exec(NODE, "chmod 0700 %s && chmod 0600 %s && touch %s" % (AGENT_DIR, INSTALLED_AGENT, UPSTREAM_FILE))
        pid_before = docker_exec(NODE, "systemctl show flanneld -p MainPID --value").strip()
        output = run_flanneld_role()
        assert [task_status(output, name) for name in TASKS] == ["changed"] * 3, output[-4000:]
        assert docker_exec(NODE, "stat -c %%a %s %s" % (AGENT_DIR, INSTALLED_AGENT)).split() == ["755", "644"]
        assert docker_exec(NODE, "test -e %s || echo absent" % UPSTREAM_FILE).strip() == "absent"
        # The copy's change (its mode) restarts the agent, as any change of the agent's file does.
        assert docker_exec(NODE, "systemctl show flanneld -p MainPID --value").strip() != pid_before

        output = run_flanneld_role()
        assert "changed=0" in output, output[-3000:]
        assert [task_status(output, name) for name in TASKS] == ["skipping"] * 3, output[-4000:]
