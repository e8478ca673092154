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


def hostvars(inventory):
    listing = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-inventory"), "-i", inventory,
                              "--list"], stdout=subprocess.PIPE, text=True, check=True, cwd=ROOT).stdout
    return json.loads(listing)["_meta"]["hostvars"]


def test_the_second_lab_has_its_own_nodes_and_every_variable_of_the_lab():
    """inventories/lab2 (make test's second lab): two nodes of its own at .20 and .21, named lab2, and
    the lab's group variables, each of them (its group_vars links to each file of the lab's)."""
    lab, second = hostvars(os.path.join(ROOT, "inventories", "lab")), hostvars(os.path.join(ROOT, "inventories", "lab2"))
    assert dict((name, second[name]["netlab_lab_address"]) for name in second) == {
        "lab2-node1": "192.168.205.20", "lab2-node2": "192.168.205.21"}
    assert set(second[name]["netlab_lab_instance"] for name in second) == {"lab2"}
    assert sorted(os.listdir(os.path.join(ROOT, "inventories", "lab2", "group_vars"))) == \
        sorted(os.listdir(os.path.join(ROOT, "inventories", "lab", "group_vars")))
    own = ("netlab_lab_address", "netlab_lab_instance")
    assert dict((key, value) for key, value in second["lab2-node1"].items() if key not in own) == \
        dict((key, value) for key, value in lab["docker-node1"].items() if key not in own)


@pytest.mark.parametrize("inventory, nodes, lock", [
    ("inventories/lab", {"docker-node1": "192.168.205.10", "docker-node2": "192.168.205.11"}, "/tmp/netlab-lab.lock"),
    ("inventories/lab2", {"lab2-node1": "192.168.205.20", "lab2-node2": "192.168.205.21"}, "/tmp/netlab-lab2.lock")])
def test_the_lab_tools_take_nodes_addresses_and_lock_from_the_inventory(inventory, nodes, lock):
    """tests/support/labtools.py on the lab $NETLAB_INVENTORY names: its nodes, their IPv6 addresses
    (lab/common.sh's lab_ipv6) and its lock."""
    show = "import json\nfrom support import labtools as t\nprint(json.dumps([t.NODES, t.NODES6, t.LOCK, t.NODE1]))\n"
    env = dict(os.environ, NETLAB_INVENTORY=inventory,
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "tests"), os.path.join(ROOT, ".collections")]))
    shown = subprocess.run([sys.executable, "-c", show], env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    assert json.loads(shown) == [nodes, dict((name, "fd6c:ab5e:2050:205::" + address.rsplit(".", 1)[1])
                                             for name, address in nodes.items()), lock, sorted(nodes)[0]]
