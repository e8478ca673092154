"""verify.yml's metrics columns and the picture of the overlay (playbooks/status.yml) on the lab:
with this checkout's agent (site.yml deploys it when another checkout's runs), verify.yml shows
each host's lease expiry, peers and repairs from its /metrics and writes build/overlay.svg and
.png; then a host whose agent is stopped and whose route to its peer is flushed is drawn marked,
and comes back unmarked once its agent runs again. Its verify.yml is also the three-node case's check
of the two-node lab that case provisions again at its end (test_n_nodes.py, labtools.hand_over)."""

import os
import re
import time

from support.labtools import NODE1, NODE2, NODES, ROOT, ansible_playbook, docker_exec, ensure_lab, lab_inventories, own_agent_installed
from test_n_nodes import BACK_ON_TWO_NODES

PICTURE = os.path.join(ROOT, "build", "overlay")
TABLE_ROW = re.compile(r'"(' + "|".join(re.escape(node) for node in NODES) +
                       r') +(10\.\d+\.\d+\.0/\d+) +([0-9a-f:]{17}) +([0-9.]+) h +(\d+) +(\d+) +test')


def _svg():
    with open(PICTURE + ".svg") as handle:
        return handle.read().replace("&#45;", "-")  # dot writes every "-" of a label as an entity


def test_verify_shows_metrics_and_draws_the_overlay_marking_a_host_that_disagrees(lab):
    with lab():
        # After the three-node case (test_n_nodes.py), this verify.yml is also its check of the
        # two-node lab it provisions again at its end (labtools.hand_over).
        ensure_lab(start_from=(BACK_ON_TWO_NODES,))
        inventories = lab_inventories()
        if not own_agent_installed():
            rc, output = ansible_playbook([os.path.join(ROOT, "playbooks", "site.yml")], inventories=inventories,
                                          timeout=1200)
            assert rc == 0, output[-4000:]
        rc, output = ansible_playbook([os.path.join(ROOT, "playbooks", "verify.yml")], inventories=inventories)
        assert rc == 0, output[-4000:]
        rows = dict((match.group(1), match.groups()[1:]) for match in TABLE_ROW.finditer(output))
        assert sorted(rows) == sorted(NODES), output[-3000:]
        for node, (_subnet, _mac, expires, peers, _repairs) in rows.items():
            assert 0 < float(expires) <= 24 and int(peers) == len(NODES) - 1, (node, expires, peers)
        assert "The overlay: %s.svg and %s.png; 0 host(s) disagreeing" % (PICTURE, PICTURE) in output
        # Drawn from the graph as this run left it (drawn again only when the graph changed: status.yml);
        # the labels checked below are this run's.
        for picture in (PICTURE + ".svg", PICTURE + ".png"):
            assert os.path.getmtime(picture) >= os.path.getmtime(PICTURE + ".dot") and os.path.getsize(picture) > 1000
        svg = _svg()
        for node, (subnet, mac, _expires, _peers, _repairs) in rows.items():
            assert node in svg and subnet in svg and mac in svg and NODES[node] in svg
        assert "DISAGREES" not in svg and "missing:" not in svg

        # The second node's agent stopped and its route to the first flushed: drawn marked.
        docker_exec(NODE2, "systemctl stop flanneld && ip -4 route flush dev flannel.100")
        try:
            rc, output = ansible_playbook([os.path.join(ROOT, "playbooks", "status.yml")], inventories=inventories)
            assert rc == 0, output[-4000:]
            assert "1 host(s) disagreeing with their lease: %s" % NODE2 in output
            svg = _svg()
            assert "%s (DISAGREES WITH ITS LEASE)" % NODE2 in svg and "missing: route" in svg
            assert "%s (DISAGREES" % NODE1 not in svg
        finally:
            docker_exec(NODE2, "systemctl start flanneld")
        deadline = time.time() + 60
        while True:  # the agent restores the route at start-up; the picture is clean again
            rc, output = ansible_playbook([os.path.join(ROOT, "playbooks", "status.yml")], inventories=inventories)
            if rc == 0 and "0 host(s) disagreeing" in output:
                break
            assert time.time() < deadline, output[-4000:]
            time.sleep(3)
        assert "DISAGREES" not in _svg()
        # Once more: where the graph came out the same, the picture is not drawn again (no change).
        rc, output = ansible_playbook([os.path.join(ROOT, "playbooks", "status.yml")], inventories=inventories)
        assert rc == 0, output[-4000:]
        graph = re.search(r"TASK \[Write the overlay as a graphviz graph\] \**\s*(\w+):", output).group(1)
        render = re.search(r"TASK \[Render it as SVG and PNG\] \**\s*(\w+):", output).group(1)
        assert graph == "changed" or render == "ok", (graph, render)
