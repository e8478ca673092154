"""playbooks/perf.yml on the lab: bad inputs stop it before any change; a short run carries traffic.

Bad inputs (each a real ansible-playbook run under the lab lock; the lab's etcd keyspace and each
node's state are snapshotted before and after and must be equal): an unknown backend name, an
inventory with one host, a host that cannot be reached, a measurement tool apt cannot install,
and a lab network that does not exist. Each output names the problem.

The smoke proves perf.yml's wiring, not figures (those are `make perf`'s): its short mode (1 s of
iperf3 per stream count and path, 100 pings, one round) with our agent on wireguard, brought up
fresh (teardown, site.yml, verify.yml) and measured, then the lab's own config brought back
(teardown after a measured case, site.yml, verify.yml). Wireguard is the one backend with paths of
its own (wireguard-go alone host -> host, and container -> container through that tunnel between
two containers perf.yml starts and removes) besides the three every backend has; perf.yml has
nothing else per backend but its network config, so the other backends' data planes are proven
where they carry traffic: vxlan in every lab test, host-gw in test_config_change_lab.py, udp in
Molecule's default scenario (udp.yml: verify.yml's pings on udp) and test_upstream_agent.py
(verify.yml on udp with upstream's agent), vxlan's DirectRouting in tests/agent/test_vxlan_backend.py
(issue 25: with vxlan and DirectRouting as a second case the smoke took 282 s, with wireguard
alone 137 s, on the main lab's lane, for a config the agent's namespace test already runs); upstream's runs and the MTU passes are
left to `make perf`. It runs last on the lab (marked lab_last) and
starts from the wireguard case's teardown: its bring-up is that case's return to a working
overlay (labtools.hand_over). It fails when a path carries no traffic or perf.yml leaves its
wireguard-go baseline (device or container) behind; then site.yml on the restored lab must
change nothing (what `make lab` would do next). Figures are printed, never asserted.
"""

import json
import os
import re

import pytest

from support.labtools import (LAB_INVENTORY, NODE1, NODES, ROOT, ansible_playbook, docker_exec, ensure_lab, lab_inventories,
                              lab_snapshot)
from test_n_nodes import BACK_ON_TWO_NODES
from test_wireguard_lab import TORN_DOWN_AFTER_WIREGUARD

PERF = os.path.join(ROOT, "playbooks", "perf.yml")
SITE = os.path.join(ROOT, "playbooks", "site.yml")
INVENTORIES = os.path.join(ROOT, "tests", "integration", "inventories")
SMOKE_BACKENDS = ["wireguard"]
# The paths of each smoke backend's case, in the report's order.
SMOKE_PATHS = {"wireguard": ["underlay", "overlay host", "overlay container", "wireguard-go alone",
                             "wireguard-go alone container"]}
# perf.yml's container for wireguard-go alone, container -> container (vars/perf.yml).
WG_ALONE_CONTAINER = "netlab-perf-wg-alone"

# (id, extra vars, inventories (None: the lab's), fragments the output must contain)
BAD_INPUTS = [
    ("unknown-backend", {"perf_backends": ["vxlan", "vxlan-fast"]}, None,
     ["perf_backends: unknown backend vxlan-fast; known backends are vxlan, vxlan-directrouting, host-gw, udp"]),
    ("one-host", {}, [os.path.join(INVENTORIES, "perf_one_host.yml")],
     ["perf.yml needs at least two hosts in the inventory group 'flannel'", "this inventory has 1"]),
    ("unreachable-host", {}, [LAB_INVENTORY, os.path.join(INVENTORIES, "perf_unreachable_host.yml")],
     ["docker-node3", "UNREACHABLE"]),
    ("tool-not-installable", {"perf_packages": ["iperf3", "netlab-no-such-tool"]}, None,
     ["%s: netlab-no-such-tool not installed and apt has no candidate for it" % NODE1]),
    ("missing-lab-network", {"netlab_lab_network": "netlab-missing"}, None,
     ["the lab network 'netlab-missing' (netlab_lab_network) does not exist"]),
]


@pytest.mark.parametrize("case_id, extra_vars, inventories, fragments", [pytest.param(*c, id=c[0]) for c in BAD_INPUTS])
def test_bad_perf_input_stops_before_any_change(lab, tmp_path, case_id, extra_vars, inventories, fragments):
    variables = dict(extra_vars, perf_output_dir=str(tmp_path))
    with lab():
        ensure_lab(passes_on=(BACK_ON_TWO_NODES,))  # it changes nothing: the next case takes that state
        before = lab_snapshot()
        rc, output = ansible_playbook([PERF], extra_vars=variables, inventories=inventories or lab_inventories(),
                                      timeout=300)
        after = lab_snapshot()
    assert rc != 0, "%s was accepted:\n%s" % (case_id, output[-3000:])
    for fragment in fragments:
        assert fragment in output, "%s: %r not in the output:\n%s" % (case_id, fragment, output[-3000:])
    assert "Install iperf3 and ping" not in output, "%s: the run went past the checks" % case_id
    assert before == after, "%s changed the lab" % case_id


@pytest.mark.lab_last
def test_perf_smoke_every_path_carries_traffic_and_lab_is_restored(lab, tmp_path):
    short = {"perf_seconds": 1, "perf_omit_seconds": 0, "perf_ping_count": 100, "perf_ping_interval": 0.01,
             "perf_backends": SMOKE_BACKENDS, "perf_variants": [], "perf_upstream_binary": "", "perf_wg_rounds": 1,
             "perf_output_dir": str(tmp_path)}
    with lab():
        # Run last (lab_last): it starts from the wireguard case's teardown when that ran, and its
        # bring-up (teardown.yml, site.yml, verify.yml) is that case's return to a working overlay.
        ensure_lab(start_from=(TORN_DOWN_AFTER_WIREGUARD,))
        inventories = lab_inventories()
        rc, output = ansible_playbook([PERF], extra_vars=short, inventories=inventories, timeout=3600)
        assert rc == 0, "perf.yml failed:\n" + output[-4000:]
        rc, site = ansible_playbook([SITE], inventories=inventories, timeout=1200)
        leftovers = dict((node, docker_exec(node, "docker ps -a -q --filter name=^%s$; ip -br link show dev wg-alone "
                                                  "2>/dev/null || true" % WG_ALONE_CONTAINER)) for node in NODES)
    assert rc == 0, "site.yml failed after perf.yml:\n" + site[-3000:]
    recap = dict(re.findall(r"(\S+) : ok=\d+ changed=(\d+)", site))
    assert dict((node, recap.get(node)) for node in NODES) == dict((node, "0") for node in NODES), \
        "site.yml after perf.yml changed the lab: %s" % recap
    summary = json.load(open(tmp_path / "summary.json"))
    assert [case["backend"] for case in summary["cases"]] == SMOKE_BACKENDS
    for case in summary["cases"]:
        assert [row["path"] for row in case["rows"]] == SMOKE_PATHS[case["backend"]]
        for row in case["rows"]:
            assert all(figure["gbps"] > 0 for figure in row["throughput"].values()), (case["label"], row)
            assert row["latency"]["received"] > 0, (case["label"], row)
    assert summary["no_traffic"] == []
    assert leftovers == dict((node, "") for node in NODES), "perf.yml left its wireguard-go baseline: %s" % leftovers
    assert (tmp_path / "perf.png").stat().st_size > 0
    print(open(tmp_path / "table.txt").read())
