"""The built agent given wrong flags, a wrong etcd password and SIGHUP, on namespace hosts with a
real etcd: one line naming the flag and status 2 before etcd is written; refusals retried; no
traceback from any of it."""

import os
import signal
import subprocess
import sys
import time

import pytest
from netaddr import IPNetwork

from support.cluster import wait_for
from support.etcdserver import v2_admin_call
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry.v2 import EtcdRegistry

# No overlay traffic, no loss counted: make test runs this file before Molecule ends (agent-control).
pytestmark = pytest.mark.control_plane

EVENTS_ONLY = "-reconcile-interval=3600"  # so that only SIGHUP can repair what is removed below


def _keys(cluster):
    """Every key under the prefix, values included: to compare before and after."""
    raw = cluster.registry._clients[0]
    try:
        return sorted((node.key, node.value) for node in raw.read("/coreos.com/network", recursive=True).leaves)
    except Exception as err:  # noqa: BLE001 - reported in the comparison
        return [("error", str(err))]


@pytest.mark.parametrize("flag, message", [
    ("-public-ip=not-an-ip", "invalid value 'not-an-ip' for -public-ip: must be an IPv4 unicast address"),
    ("-public-ip=2001:db8::1", "2001:db8::1 is not an IPv4 address (the data plane is IPv4)"),
    ("-public-ip=172.31.250.255", "invalid value for flag -public-ip: public IP 172.31.250.255 is the broadcast "
                                  "address of the on-link prefix 172.31.250.0/24: no single host answers there"),
    ("-public-ip=172.31.250.0", "public IP 172.31.250.0 is the network address of the on-link prefix 172.31.250.0/24"),
    ("-healthz-ip=not-an-ip", "invalid value 'not-an-ip' for -healthz-ip: must be an IPv4 address"),
    ("-healthz-ip=172.31.250.99", "invalid value for flag -healthz-ip/-healthz-port: cannot listen on "
                                  "172.31.250.99:8471: Cannot assign requested address"),
    ("-iface=doesnotexist", "invalid value for flag -iface: Failed to find interface to use that matches the "
                            "interfaces and/or regexes provided (-iface doesnotexist; this host has: lo 127.0.0.1, "
                            "eth0 172.31.250.11)"),
    ("-iface-regex=^wlan", "invalid value for flag -iface-regex: Failed to find interface"),
    ("-subnet-file=/sys/flannel/subnet.env", "invalid value '/sys/flannel/subnet.env' for -subnet-file: "
                                             "cannot write a file in /sys/flannel"),
    ("-etcd-cafile=/nonexistent/ca.pem", "invalid value '/nonexistent/ca.pem' for -etcd-cafile: not a readable file"),
])
def test_bad_flag_is_one_line_status_2_and_etcd_is_untouched(lab, cluster, flag, message):
    host = lab.add_host()
    before = _keys(cluster)
    subnet_file = "-subnet-file=" + os.path.join(cluster.workdir, host.name, "subnet.env")
    argv = ["ip", "netns", "exec", host.ns, sys.executable, cluster.agent_path, "-etcd-endpoints=" + cluster.endpoint,
            "-healthz-port=8471", flag]
    if not flag.startswith("-iface"):
        argv.append("-iface=eth0")
    if not flag.startswith("-subnet-file"):
        argv.append(subnet_file)
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False,
                            timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("flanneld: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert _keys(cluster) == before


def _etcd_admin(cluster, method, path, body=None, auth=None):
    return v2_admin_call(cluster.endpoint, method, path, body, auth)


def test_wrong_etcd_password_is_retried_with_503_then_recovers(lab, cluster):
    _etcd_admin(cluster, "PUT", "/v2/auth/users/root", {"user": "root", "password": "right"})
    _etcd_admin(cluster, "PUT", "/v2/auth/enable")
    _etcd_admin(cluster, "PUT", "/v2/auth/roles/guest",
                {"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}}, auth="root:right")
    refused = cluster.agent(lab.add_host(), "-etcd-username=root", "-etcd-password=wrong-one")
    wait_for(lambda: refused.healthz()[0] == 503 and "refused access" in refused.healthz()[1], 15,
             what="503 naming the refusal (log:\n%s)" % refused.log)
    time.sleep(4)
    assert refused.process.poll() is None
    assert refused.log.count("refused access to /coreos.com/network") == 2  # the error and the health change
    assert "Traceback" not in refused.log and "wrong-one" not in refused.log
    accepted = cluster.agent(lab.add_host(), "-etcd-username=root", "-etcd-password=right")
    accepted.wait_ready()
    # The operator sets the password the first agent was given: it gets in on a later retry.
    _etcd_admin(cluster, "PUT", "/v2/auth/users/root", {"user": "root", "password": "wrong-one"}, auth="root:right")
    refused.wait_ready(timeout=40)
    admin = EtcdRegistry(cluster.endpoint, username="root", password="wrong-one")
    subnets = sorted(str(lease.subnet) for lease in admin.list_leases().leases)
    assert subnets == sorted([refused.env()["FLANNEL_SUBNET"].replace(".1/", ".0/"),
                              accepted.env()["FLANNEL_SUBNET"].replace(".1/", ".0/")])
    assert "with backoff (1, 2, 4 ... 30 s)" in refused.log


def test_sighup_is_logged_and_resyncs(lab, cluster):
    # Repairs on the kernel's notifications off: the SIGHUP's reconcile is what restores the route.
    first = cluster.agent(lab.add_host(), EVENTS_ONLY, "-repair-on-events=false")
    second = cluster.agent(lab.add_host(), EVENTS_ONLY)
    for agent in (first, second):
        agent.wait_ready()
    peer = str(IPNetwork(second.env()["FLANNEL_SUBNET"]).cidr)
    wait_for(lambda: peer in first.routes(), what="route to the peer")
    first.host.run(["ip", "route", "del", peer, "dev", "flannel.100"])
    assert peer not in first.routes()
    first.process.send_signal(signal.SIGHUP)
    wait_for(lambda: peer in first.routes(), 10, what="route restored after SIGHUP (log:\n%s)" % first.log)
    assert "SIGHUP: re-listing leases and reconciling the data plane" in first.log
    assert first.process.poll() is None and first.healthz()[0] == 200
    assert "Traceback" not in first.log


def test_check_flags_in_the_built_agent_answers_without_starting(agent_path, tmp_path):
    """-check-flags, as the flanneld role runs it on a node: 2 and the start's line for a bad flag,
    0 and silence for good ones; no etcd is contacted (the endpoint answers nothing)."""
    base = [sys.executable, agent_path, "-check-flags", "-etcd-endpoints=http://127.0.0.1:1",
            "-subnet-file=%s" % (tmp_path / "subnet.env")]
    bad = subprocess.run(base + ["-healthz-port=8471", "-metrics-port=8471"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, check=False, timeout=30)
    assert bad.returncode == 2 and bad.stdout == "", bad
    assert bad.stderr == ("flanneld: invalid value 8471 for -metrics-port: it is the -healthz-port; leave "
                          "-metrics-port at 0 to serve /metrics on the healthz port\n")
    good = subprocess.run(base + ["-healthz-port=8471", "-iface=nosuchiface"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, check=False, timeout=30,
                          env=dict(os.environ, FLANNELD_ETCD_PASSWORD="x y"))
    assert (good.returncode, good.stdout, good.stderr) == (0, "", "")
    assert list(tmp_path.iterdir()) == []
