"""The agent's environment file carries any value systemd can carry, byte for byte (issue 19).

On the lab (under its lock): the flanneld role on its first node with hostile etcd passwords (quotes,
backslashes, $HOME, %h, edge spaces, #, ;, a trailing backslash); each time the running agent
(the flanneld service's main PID) holds exactly the password in /proc/PID/environ, and works: the
role waits until /healthz names the stored config in force. The lab's etcd has auth off, so the
agent's basic auth is ignored by etcd. Then the role without a password restores the node, and the
lab snapshot equals the one taken before.

The same quoting (netlab.flannel.systemd_env_value) is also read back by the node's systemd for a
wider set of values in one transient unit (systemd-run, EnvironmentFile=, `env -0`).
"""

import base64
import os
import shlex

from ansible_collections.netlab.flannel.plugins.filter.systemd_env_value import systemd_env_value
from support.labtools import NODE1, PLAYBOOKS, ansible_playbook, docker_exec, ensure_lab, lab_inventories, lab_snapshot

ROLE = os.path.join(PLAYBOOKS, "role.yml")
NODE = NODE1
ON_NODE = {"integration_role": "flanneld", "integration_hosts": NODE}
PASSWORDS = [
    " q'uo\"te back\\slash $HOME ${HOME} `id` %h %% #hash ;semi ends in \\",
    "#;\tstarts with a comment sign, ends in spaces  ",
]
MORE_VALUES = PASSWORDS + ["", "\\", '"', "'", "\\\"", "$", "%", "%%h", "${X:-y}", "a=b", "x\\\\ny", " ", "\t",
                           "pässwörd €", "\\$HOME", "line\\", "a#b ;c"]

# Inside the node: the agent's environment, NUL-separated, as base64.
AGENT_ENVIRON = "base64 -w0 /proc/$(systemctl show -p MainPID --value flanneld)/environ"


def run_role(extra_vars):
    rc, output = ansible_playbook([ROLE], extra_vars=dict(ON_NODE, **extra_vars), inventories=lab_inventories(),
                                  timeout=1200)
    assert rc == 0, "role.yml %s failed:\n%s" % (sorted(extra_vars), output[-4000:])
    return output


def environ_of_agent():
    raw = base64.b64decode(docker_exec(NODE, AGENT_ENVIRON))
    return dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)


def test_hostile_passwords_reach_the_running_agent_unchanged(lab):
    with lab():
        ensure_lab()
        run_role({})  # this checkout's role in place first: the snapshot is what the restore gives
        before = lab_snapshot()
        try:
            for password in PASSWORDS:
                output = run_role({"flanneld_etcd_username": "netlab-quoting", "flanneld_etcd_password": password})
                assert password not in output
                environ = environ_of_agent()
                assert environ.get(b"FLANNELD_ETCD_PASSWORD") == password.encode(), (password, environ)
        finally:
            run_role({})  # the lab is shared: back to no password even when a check failed
        after = lab_snapshot()
    assert b"FLANNELD_ETCD_PASSWORD" not in environ_of_agent()
    assert after == before


def test_the_nodes_systemd_reads_the_quoted_values_back_exactly(lab):
    lines = "".join("V%d=%s\n" % (number, systemd_env_value(value)) for number, value in enumerate(MORE_VALUES))
    path = "/run/netlab-quoting-test.env"
    with lab():
        ensure_lab()
        try:
            docker_exec(NODE, "umask 077; cat > %s" % path, stdin=lines)
            encoded = docker_exec(NODE, "systemd-run --quiet --wait --pipe -p EnvironmentFile=%s env -0 | base64 -w0"
                                  % shlex.quote(path))
        finally:
            docker_exec(NODE, "rm -f %s" % path)
    received = dict(item.split(b"=", 1) for item in base64.b64decode(encoded).split(b"\0") if b"=" in item)
    for number, value in enumerate(MORE_VALUES):
        assert received.get(b"V%d" % number) == value.encode(), (value, received.get(b"V%d" % number))
