"""lab/inventory.sh: the inventory of an N-node lab (make lab NODES=N), as ansible-inventory reads it."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "lab", "inventory.sh")


def generate(*args):
    return subprocess.run(["bash", SCRIPT] + [str(arg) for arg in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=False)


def groups(directory):
    listing = json.loads(subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-inventory"), "-i", directory, "--list"],
        stdout=subprocess.PIPE, text=True, check=True, cwd=ROOT).stdout)
    hostvars = listing["_meta"]["hostvars"]
    return (dict((name, hostvars[name]["netlab_lab_address"]) for name in hostvars),
            listing["etcd"]["hosts"], listing["nodes"]["hosts"], listing["flannel"],
            set(hostvars["docker-node1"]) >= {"ansible_user", "network_config_flannel"})


@pytest.mark.parametrize("args, members", [((3,), 3), ((1,), 1), ((2,), 2), ((6,), 3), ((5, 5), 5), ((5, 1), 1)])
def test_nodes_from_10_onwards_the_first_members_in_etcd(args, members):
    result = generate(*args)
    assert result.returncode == 0, result.stderr
    addresses, etcd, nodes, flannel, lab_vars = groups(result.stdout.strip())
    count = args[0]
    names = ["docker-node%d" % index for index in range(1, count + 1)]
    assert addresses == dict((name, "192.168.205.%d" % (9 + index)) for index, name in enumerate(names, 1))
    assert nodes == names and etcd == names[:members] and flannel == {"children": ["nodes"]}
    assert lab_vars, "the lab inventory's group_vars apply"


@pytest.mark.parametrize("args, named", [
    ((0,), "NODES"), ((246,), "NODES"), (("x",), "NODES"), ((), "NODES"), ((4, 2), "ETCD_MEMBERS"),
    ((3, 4), "ETCD_MEMBERS"), ((3, 0), "ETCD_MEMBERS"), ((3, "one"), "ETCD_MEMBERS")])
def test_bad_counts_are_refused_naming_the_variable(args, named):
    result = generate(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("inventory: %s must be " % named) and result.stderr.count("\n") == 1, result.stderr
