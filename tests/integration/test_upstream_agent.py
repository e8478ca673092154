"""The flanneld role deploys upstream flanneld v0.10.0 instead of the collection's agent, and back.

On the lab (under its lock), on udp (our agent first moved there by the stored config alone, which
it follows): site.yml with flanneld_upstream_binary, then verify.yml on udp; then site.yml without
it and with the inventory's config, which brings our agent back and the lab back to vxlan in one
run, verify.yml, and a second site.yml that changes nothing. Each host keeps its subnet through
both switches, and the agent that runs is the one asked for (the unit's ExecStart and the running
process's executable). On udp because it has the one hazard vxlan lacks (our agent's flannel0
outlives it and must not be in upstream's way); the role's steps are the same on every backend, and
upstream on vxlan beside our agent is tests/agent/test_mixed_cluster.py's. Our agent's own udp
data plane (verify.yml on udp) is Molecule's default scenario's (udp.yml); a site.yml and a
verify.yml of ours on udp here proved it a second time (issue 25: about 1 min of the lab lane). The
lab runs NAT-free, so upstream runs with -ip-masq: its uncommented masquerade rules must be gone
once our agent runs again (it deletes them at its first check). Skipped, saying where the binary was looked for, when it is
absent. A bad path is refused before any host changes.
"""

import json
import os
import re
import time

import pytest

from support.labtools import (NODE1, NODES, PLAYBOOKS, ROOT, UPSTREAM_FLANNELD, ansible_playbook, docker_exec, ensure_lab,
                              lab_inventories, lab_snapshot)

SITE = os.path.join(ROOT, "playbooks", "site.yml")
VERIFY = os.path.join(ROOT, "playbooks", "verify.yml")
ROLE = os.path.join(PLAYBOOKS, "role.yml")
INSTALL_DIR = "/usr/local/lib/netlab-flannel"

needs_upstream = pytest.mark.skipif(
    not os.access(UPSTREAM_FLANNELD, os.X_OK),
    reason="upstream flanneld v0.10.0 is absent: no executable at %s (set NETLAB_UPSTREAM_FLANNELD to its path); "
           "the switch to upstream flanneld and back is not tested" % UPSTREAM_FLANNELD)

# Inside a node: the unit's command line and the executable of the process systemd runs for it.
AGENT_STATE = r"""
sed -n '/^ExecStart=/,/^[A-Z]/p' /etc/systemd/system/flanneld.service | grep -v '^TimeoutStartSec'
pid=$(systemctl show -p MainPID --value flanneld)
echo "active=$(systemctl is-active flanneld) exe=$(readlink /proc/$pid/exe)"
ls /usr/local/lib/netlab-flannel
"""


def subnets(snapshot):
    """{public IP: subnet} from the leases in a lab snapshot's etcd keyspace."""
    found = {}
    for key, value in snapshot["etcd"].items():
        if "/subnets/" in key:
            found[json.loads(value)["PublicIP"]] = key.rsplit("/", 1)[1]
    return found


def changed_counts(output):
    return {host: int(changed) for host, changed in re.findall(r"(\S+) : ok=\d+ changed=(\d+)", output)}


def run_ok(playbook, extra_vars=None):
    rc, output = ansible_playbook([playbook], extra_vars=extra_vars, inventories=lab_inventories(), timeout=1200)
    assert rc == 0, "%s %s failed:\n%s" % (os.path.basename(playbook), extra_vars or "", output[-4000:])
    return output


def assert_agent(kind):
    for node in NODES:
        state = docker_exec(node, AGENT_STATE)
        if kind == "upstream":
            assert "ExecStart=%s/flanneld \\" % INSTALL_DIR in state, "%s: %s" % (node, state)
            for ours_only in ("-reconcile-interval", "-vxlan-offload"):
                assert ours_only not in state, "%s: %s, which upstream refuses: %s" % (node, ours_only, state)
            assert "active=active exe=%s/flanneld\n" % INSTALL_DIR in state, "%s: %s" % (node, state)
            assert state.strip().endswith("\nflanneld"), "%s: the zipapp was left: %s" % (node, state)
        else:
            assert "flanneld.pyz" in state.split("ExecStart=")[1].split("\n")[0], "%s: %s" % (node, state)
            assert "-reconcile-interval" in state, "%s: %s" % (node, state)
            assert re.search(r"active=active exe=/usr/bin/python3", state), "%s: %s" % (node, state)
            assert state.strip().endswith("\nflanneld.pyz"), "%s: upstream's binary was left: %s" % (node, state)


def forward_rules():
    return {node: docker_exec(node, "iptables -w -S FORWARD").splitlines() for node in NODES}


def uncommented_masquerade_rules():
    """nat POSTROUTING rules naming the lab's Network without our comment: upstream's -ip-masq
    rules (the lab runs NAT-free, with -ip-masq), which it leaves when it stops."""
    return {node: [rule for rule in docker_exec(node, "iptables -w -t nat -S POSTROUTING").splitlines()
                   if "-s 10.0.0.0/8" in rule and "flanneld masq" not in rule] for node in NODES}


def drop_upstream_forward_rules(rules_before):
    """Upstream leaves its two FORWARD rules (-s/-d Network -j ACCEPT) when it stops (see the role's
    README): remove the ones that were not there before, so that the shared lab is as it was."""
    for node, before in rules_before.items():
        for rule in docker_exec(node, "iptables -w -S FORWARD").splitlines():
            if rule not in before and re.match(r"-A FORWARD -[sd] \S+ -j ACCEPT$", rule):
                docker_exec(node, "iptables -w -D %s" % rule[len("-A "):])


def wait_for_flannel0(seconds=60):
    """Until every node's agent runs the udp backend: flannel0 up, subnet.env on its MTU."""
    deadline = time.monotonic() + seconds
    check = "ip -o link show flannel0 2>/dev/null | grep -o 'mtu [0-9]*'; grep -o 'FLANNEL_MTU=[0-9]*' /run/flannel/subnet.env"
    while True:
        states = dict((node, docker_exec(node, check + " || true").split()) for node in NODES)
        if all(len(state) == 3 and "FLANNEL_MTU=" + state[1] == state[2] for state in states.values()):
            return
        assert time.monotonic() < deadline, "flannel0 not in force on every node after %d s: %s" % (seconds, states)
        time.sleep(0.5)


# The inventory's overlay on udp: our agent keeps its udp device flannel0 across restarts, which
# upstream must not find in its way (it would name its own flannel1).
UDP_CONFIG = {"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0",
              "Backend": {"Type": "udp", "Port": 8285}}


@needs_upstream
def test_switch_to_upstream_flanneld_and_back_on_udp_keeps_each_hosts_subnet(lab):
    backend_vars = {"network_config_flannel": UDP_CONFIG}
    with lab():
        ensure_lab()
        rules_before = forward_rules()
        returned = False
        try:
            # Our agent onto udp by the stored config alone (it follows without a restart and makes
            # flannel0, the device upstream must not find in its way): site.yml's first run below
            # then changes agent and MTU at once (a site.yml run of its own here cost about 35 s).
            run_ok(ROLE, {"integration_role": "network_config", "integration_hosts": sorted(NODES)[0],
                          "network_config_flannel": UDP_CONFIG})
            wait_for_flannel0()
            before = subnets(lab_snapshot())
            assert len(before) == len(NODES), before
            # Relative to the directory ansible-playbook runs in (the checkout), as documented.
            run_ok(SITE, dict(backend_vars, flanneld_upstream_binary=os.path.relpath(UPSTREAM_FLANNELD, ROOT)))
            assert_agent("upstream")
            assert subnets(lab_snapshot()) == before, "a subnet changed when switching to upstream"
            assert all(uncommented_masquerade_rules().values()), "upstream set no -ip-masq rules"
            run_ok(VERIFY, backend_vars)
            # Back to our agent and to the inventory's vxlan config in one run (the lab's own state).
            returned = True
            run_ok(SITE)
            assert_agent("ours")
            for node in NODES:
                links = docker_exec(node, "ip -o link show")
                assert "flannel.100" in links and "flannel0" not in links, "%s: %s" % (node, links)
            assert uncommented_masquerade_rules() == {node: [] for node in NODES}, \
                "upstream's -ip-masq rules outlived the switch back"
            assert subnets(lab_snapshot()) == before, "a subnet changed when switching back"
            run_ok(VERIFY)
            again = changed_counts(run_ok(SITE))
        finally:
            # Back to the collection's agent on the inventory's overlay when a check failed before
            # that run: the lab is shared.
            if not returned:
                run_ok(SITE)
            drop_upstream_forward_rules(rules_before)
    assert set(again) == set(NODES) and set(again.values()) == {0}, "second run changed something: %s" % again


def test_missing_upstream_binary_is_refused_before_any_change(lab):
    missing = "/nonexistent/flanneld-v0.10.0"
    with lab():
        ensure_lab()
        before = lab_snapshot()
        rc, output = ansible_playbook([ROLE], extra_vars={"integration_role": "flanneld",
                                                          "integration_hosts": NODE1,
                                                          "flanneld_upstream_binary": missing},
                                      inventories=lab_inventories())
        after = lab_snapshot()
    assert rc != 0, output[-3000:]
    assert "flanneld_upstream_binary (%s, resolved to %s): must be an executable file on the controller" % (
        missing, missing) in output, output[-3000:]
    assert before == after
