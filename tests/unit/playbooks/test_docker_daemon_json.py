"""The docker role's daemon.json from subnet.env, computed by the role's own tasks (validate.yml and
subnet_env.yml, run by ansible-playbook on the controller against a local subnet file; nothing is
written): an IPv4-only lease gives exactly the keys it always did, a dual-stack one adds ipv6 and
fixed-cidr-v6 with the same mtu, and a bad docker_fixed_cidr_v6 is refused naming it. On the lab:
tests/integration/test_config_change_lab.py's dual-stack case."""

import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role: {name: netlab.flannel.docker, tasks_from: validate}
    - ansible.builtin.include_role: {name: netlab.flannel.docker, tasks_from: subnet_env}
    - ansible.builtin.copy: {content: "{{ __docker_daemon_json | to_json }}", dest: "%s"}
"""
V4 = "FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=10.15.64.1/20\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
DUAL = ("FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=10.15.64.1/20\nFLANNEL_IPV6_NETWORK=fd00:10::/48\n"
        "FLANNEL_IPV6_SUBNET=fd00:10:0:5::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")


def _daemon_json(tmp_path, subnet_env, extra_vars=None):
    (tmp_path / "subnet.env").write_text(subnet_env)
    out = tmp_path / "daemon.json"
    (tmp_path / "play.yml").write_text(PLAY % out)
    variables = dict(extra_vars or {}, docker_subnet_env_path=str(tmp_path / "subnet.env"),
                     ansible_python_interpreter=sys.executable)
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                             str(tmp_path / "play.yml"), "-e", json.dumps(variables)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                            env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg")), check=False)
    return result.returncode, result.stdout, json.loads(out.read_text()) if out.exists() else None


def test_an_ipv4_only_lease_gives_the_daemon_json_it_always_did(tmp_path):
    rc, output, daemon = _daemon_json(tmp_path, V4)
    assert rc == 0, output[-3000:]
    assert daemon == {"bip": "10.15.64.1/20", "mtu": 1450, "ip-masq": False}


def test_a_dual_stack_lease_adds_ipv6_and_its_subnet_with_the_same_mtu(tmp_path):
    rc, output, daemon = _daemon_json(tmp_path, DUAL)
    assert rc == 0, output[-3000:]
    assert daemon == {"bip": "10.15.64.1/20", "mtu": 1450, "ip-masq": False, "ipv6": True,
                      "fixed-cidr-v6": "fd00:10:0:5::1/64"}


def test_a_bad_docker_fixed_cidr_v6_is_refused_naming_it(tmp_path):
    rc, output, daemon = _daemon_json(tmp_path, DUAL, {"docker_fixed_cidr_v6": "10.0.0.0/8"})
    assert rc != 0 and daemon is None
    assert "docker_fixed_cidr_v6 (10.0.0.0/8): must be an IPv6 ADDRESS/PREFIX" in output, output[-3000:]
