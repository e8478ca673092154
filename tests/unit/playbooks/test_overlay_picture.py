"""playbooks/templates/overlay.dot.j2 rendered from status.yml's per-host facts and drawn by
graphviz's dot: what it marks, and that any text in the facts stays a valid graph. The playbook
itself runs on the lab in tests/integration/test_status_picture.py."""

import os
import shutil
import subprocess

import jinja2
import pytest

TEMPLATES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "playbooks", "templates")
CONFIG = {"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan", "VNI": 100, "Port": 8472}}


def _host(name, ip, subnet, mac, peers, problems=()):
    return {"name": name, "public_ip": ip, "lease": {"subnet": subnet, "vtep_mac": mac},
            "device": {"name": "flannel.100", "mac": mac, "mtu": 1450}, "docker0": [subnet.replace(".0/", ".1/")],
            "containers": [{"name": "test" + name[-1], "address": subnet.replace(".0/20", ".2"), "running": True}],
            "peers": peers, "problems": list(problems)}


def _peer(subnet, public_ip, route=True, neighbour=True, fdb=True):
    return {"subnet": subnet, "public_ip": public_ip, "route": route, "neighbour": neighbour, "fdb": fdb}


def _svg(hosts, config=None):
    dot = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES)).get_template("overlay.dot.j2").render(
        status_hosts=hosts, status_config=config or CONFIG)
    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed (make prereqs installs it)")
    return subprocess.run(["dot", "-Tsvg"], input=dot, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=True).stdout


def test_a_host_that_disagrees_is_marked_with_its_reasons_and_missing_entries():
    first = _host("node1", "192.168.205.10", "10.15.64.0/20", "0e:00:00:00:00:10",
                  [_peer("10.13.48.0/20", "192.168.205.11")])
    second = _host("node2", "192.168.205.11", "10.13.48.0/20", "0e:00:00:00:00:11",
                   [_peer("10.15.64.0/20", "192.168.205.10", route=False, fdb=None),
                    _peer("10.20.0.0/20", "192.168.205.99")],
                   problems=['docker0 has "no address", FLANNEL_SUBNET is 10.13.48.1/20 \\ <b>'])
    svg = _svg([first, second])
    assert "node2 (DISAGREES WITH ITS LEASE)" in svg and "node1 (DISAGREES" not in svg
    assert "missing: route" in svg and "missing: route, fdb" not in svg  # None: an entry not needed
    assert "docker0 has &quot;no address&quot;, FLANNEL_SUBNET is 10.13.48.1/20 \\ &lt;b&gt;" in svg
    assert "(no host in the inventory)" in svg and "192.168.205.99" in svg
    for text in ("public IP 192.168.205.10", "lease 10.15.64.0/20", "VtepMAC 0e:00:00:00:00:11",
                 "docker0 10.13.48.1/20", "test1", "10.15.64.2", "VNI 100 UDP 8472"):
        assert text in svg, text


def test_an_overlay_in_agreement_has_no_mark():
    first = _host("node1", "192.168.205.10", "10.15.64.0/20", "0e:00:00:00:00:10",
                  [_peer("10.13.48.0/20", "192.168.205.11")])
    second = _host("node2", "192.168.205.11", "10.13.48.0/20", "0e:00:00:00:00:11",
                   [_peer("10.15.64.0/20", "192.168.205.10")])
    svg = _svg([first, second])
    assert "DISAGREES" not in svg and "missing" not in svg and "stroke=\"red\"" not in svg


def _leases_only_host(name, ip, subnet, peer_subnet, peer_ip, backend_type, backend_data=None):
    """A host as status.yml reads it on a backend without a device of the agent's own: its peers
    are the other leases, not checked against the kernel."""
    return {"name": name, "public_ip": ip, "backend": backend_type,
            "lease": {"subnet": subnet, "vtep_mac": None, "backend_type": backend_type, "backend_data": backend_data},
            "device": None, "docker0": [subnet.replace(".0/", ".1/")], "containers": [],
            "peers": [{"subnet": peer_subnet, "public_ip": peer_ip, "checked": False}], "problems": []}


@pytest.mark.parametrize("backend, title, device, arrow", [
    ("alloc", "backend alloc (leases only, no data plane)", "no device of its own (alloc: leases only, no data plane)",
     "not programmed (alloc)"),
    ("extension", "backend extension (the user's commands)",
     "no device of its own (extension: the data plane is its commands')", "its commands' (not checked)"),
])
def test_a_backend_without_a_device_of_its_own_is_labelled_and_not_marked(backend, title, device, arrow):
    data = "docker-node1" if backend == "extension" else None
    hosts = [_leases_only_host("node1", "192.168.205.10", "10.15.64.0/20", "10.13.48.0/20", "192.168.205.11",
                               backend, data),
             _leases_only_host("node2", "192.168.205.11", "10.13.48.0/20", "10.15.64.0/20", "192.168.205.10",
                               backend, data)]
    svg = _svg(hosts, {"Network": "10.0.0.0/8", "Backend": {"Type": backend}}).replace("&#39;", "'").replace("&#45;", "-")
    assert title in svg and svg.count(device) == 2 and svg.count(arrow) == 2
    assert "DISAGREES" not in svg and "missing" not in svg and "stroke=\"red\"" not in svg
    assert "stroke=\"darkgreen\"" not in svg  # nothing checked is drawn as checked
    assert ("BackendData docker-node1" in svg) == (backend == "extension") and "VtepMAC" not in svg


def test_a_dual_stack_lease_shows_its_ipv6_subnet_and_an_ipv4_only_one_none():
    first = _host("node1", "192.168.205.10", "10.15.64.0/20", "0e:00:00:00:00:10",
                  [_peer("10.13.48.0/20", "192.168.205.11")])
    first["lease"]["ipv6_subnet"] = "fd00:10:0:5::/64"
    second = _host("node2", "192.168.205.11", "10.13.48.0/20", "0e:00:00:00:00:11",
                   [_peer("10.15.64.0/20", "192.168.205.10")])
    second["lease"]["ipv6_subnet"] = None
    svg = _svg([first, second], dict(CONFIG, EnableIPv6=True, IPv6Network="fd00:10::/48"))
    assert svg.count("IPv6 lease ") == 1 and "IPv6 lease fd00:10:0:5::/64" in svg
    assert "lease 10.15.64.0/20" in svg and "lease 10.13.48.0/20" in svg
