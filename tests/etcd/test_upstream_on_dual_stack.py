"""The flanneld role refuses upstream flanneld v0.10 on a dual-stack network (issue 24; why:
tests/agent/test_mixed_cluster_ipv6.py): its registry step, run by ansible-playbook against the
test etcd, fails naming the variable before anything is installed, and passes on an IPv4-only
network. Likewise on the wireguard backend (issue 23), which v0.10 does not have."""

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.registry import make_registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IPV4 = {"Network": "10.0.0.0/8", "SubnetLen": 20, "Backend": {"Type": "vxlan", "VNI": 100}}


def _registry_step(tmp_path, endpoint, upstream_binary):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    play = {"name": "The flanneld role's registry step", "hosts": "localhost", "gather_facts": False,
            "vars": {"flanneld_etcd_endpoints": [endpoint], "flanneld_upstream_binary": upstream_binary},
            "tasks": [{"name": "Read etcd as the role does", "ansible.builtin.include_role": {
                "name": "netlab.flannel.flanneld", "tasks_from": "registry.yml"}}]}
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps([play]))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "tmp"))
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inventory), str(playbook)]
    return subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=300, check=False)


@pytest.mark.parametrize("dual_stack, upstream, refused", [
    (True, True, True), (False, True, False), (True, False, False)])
def test_upstream_refused_on_a_dual_stack_network_only(etcd_endpoint, tmp_path, dual_stack, upstream, refused):
    config = dict(IPV4, EnableIPv6=True, IPv6Network="fd00:10::/48") if dual_stack else IPV4
    registry = make_registry("v2", endpoints=etcd_endpoint)
    registry.put_config(json.dumps(config))
    registry.close()
    run = _registry_step(tmp_path, etcd_endpoint, "/bin/true" if upstream else "")
    message = ("localhost: flanneld_upstream_binary (/bin/true): upstream flanneld v0.10 cannot run on a "
               "dual-stack network (EnableIPv6 in the stored network config)")
    assert (run.returncode != 0, message in run.stdout) == (refused, refused), run.stdout


@pytest.mark.parametrize("backend, upstream, refused", [
    ("wireguard", True, True), ("vxlan", True, False), ("wireguard", False, False)])
def test_upstream_refused_on_the_wireguard_backend_only(etcd_endpoint, tmp_path, backend, upstream, refused):
    registry = make_registry("v2", endpoints=etcd_endpoint)
    registry.put_config(json.dumps(dict(IPV4, Backend={"Type": backend})))
    registry.close()
    run = _registry_step(tmp_path, etcd_endpoint, "/bin/true" if upstream else "")
    message = ("localhost: flanneld_upstream_binary (/bin/true): upstream flanneld v0.10 has no wireguard "
               "backend (the stored network config's Backend.Type)")
    assert (run.returncode != 0, message in run.stdout) == (refused, refused), run.stdout
