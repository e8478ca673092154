"""The etcd, docker and forward roles each read the host in one module run and run a task only where
that read found its setting different (issue 21): on the lab (under its lock), site.yml on the
second node after its etcd unit was disabled and its data directory opened up, its docker stopped,
and the forward role's sysctl file edited with its mode changed. The run puts each back (those tasks
report changed), and a second run changes nothing and runs none of them.
"""

import os
import re

from support.labtools import NODE2, ROOT, ansible_playbook, docker_exec, ensure_lab, lab_inventories

SITE = os.path.join(ROOT, "playbooks", "site.yml")
NODE = NODE2
SYSCTL_FILE = "/etc/sysctl.d/60-netlab-forward.conf"
TASKS = (("etcd", "Create the data directory of this cluster"),
         ("etcd", "Enable and start etcd"),
         ("docker", "Enable and start docker"),
         ("forward", "Make IPv4 forwarding persistent and re-apply it after every docker start"))
DATA_DIR = "$(sed -n 's/^ETCD_DATA_DIR=\"\\(.*\\)\"$/\\1/p' /etc/default/etcd)"


def site_on_node():
    rc, output = ansible_playbook(["-l", NODE, SITE], inventories=lab_inventories(), timeout=900)
    assert rc == 0, "site.yml -l %s failed:\n%s" % (NODE, output[-4000:])
    return output


def task_status(output, role, name):
    """What the role's task reported on the node (changed, ok, skipping), None when it did not run."""
    found = re.search(r"TASK \[netlab\.flannel\.%s : %s\] \**\s*(\w+): \[%s\]" % (role, re.escape(name), NODE), output)
    return found.group(1) if found else None


def test_what_the_reads_find_changed_is_set_back_and_a_host_in_place_costs_no_module_run(lab):
    with lab():
        ensure_lab()
        docker_exec(NODE, "systemctl disable etcd && chmod 0755 %s" % DATA_DIR)
        docker_exec(NODE, "systemctl stop docker.socket docker && echo '# edited' >> %s && chmod 0600 %s"
                    % (SYSCTL_FILE, SYSCTL_FILE))
        output = site_on_node()
        assert [task_status(output, role, name) for role, name in TASKS] == ["changed"] * 4, output[-4000:]
        state = docker_exec(NODE, "systemctl is-enabled etcd; stat -c %%a %s %s; systemctl is-active docker; "
                                  "grep -c edited %s || true" % (DATA_DIR, SYSCTL_FILE, SYSCTL_FILE))
        assert state.split() == ["enabled", "700", "644", "active", "0"], state

        output = site_on_node()
        assert re.search(r"%s : ok=\d+ changed=0 " % NODE, output), output[-3000:]
        assert [task_status(output, role, name) for role, name in TASKS] == ["skipping"] * 4, output[-4000:]
