"""Helpers of the integration tests: ansible-playbook runs, the shared two-node lab, state snapshots.

The lab is the one $NETLAB_INVENTORY names (default inventories/lab: docker-node1/2; make test runs
some files on inventories/lab2's second lab), on the docker network `netlab` (192.168.205.0/24 and
fd6c:ab5e:2050:205::/64). Its nodes, addresses and lock come from that inventory: NODES, NODES6,
LAB_INVENTORY, LOCK. A lab is shared with other sessions: every step that runs against it holds
its lock (/tmp/netlab-<netlab_lab_instance>.lock, the lock `flock(1)` takes)
from the "before" snapshot to the "after" snapshot, and brings the lab up and provisions it
(lab/nodes.sh up, playbooks/site.yml) when it finds it missing. Traffic goes only to the lab
network's node addresses and to loopback.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
LAB_NETWORK = "netlab"
LAB_SUBNET = "192.168.205.0/24"
LAB_SUBNET6 = "fd6c:ab5e:2050:205::/64"  # lab/common.sh's LAB_SUBNET6
# The lab's inventory, as lab/common.sh reads it (relative paths from the checkout).
LAB_INVENTORY = os.path.join(ROOT, os.environ.get("NETLAB_INVENTORY") or os.path.join("inventories", "lab"))


def _inventory_nodes(inventory):
    """({node: address}, instance name) of the lab inventory: its hosts with netlab_lab_address and
    their netlab_lab_instance (default "lab"), as lab/nodes.sh reads them."""
    listed = subprocess.run([os.path.join(BIN, "ansible-inventory"), "-i", inventory, "--list"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True,
                            env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg")))
    hostvars = json.loads(listed.stdout)["_meta"]["hostvars"]
    nodes = dict((name, hostvars[name]["netlab_lab_address"]) for name in sorted(hostvars)
                 if hostvars[name].get("netlab_lab_address"))
    instance = hostvars[sorted(nodes)[0]].get("netlab_lab_instance", "lab") if nodes else "lab"
    return nodes, instance


NODES, LAB_INSTANCE = _inventory_nodes(LAB_INVENTORY)
# lab/common.sh's lab_ipv6: the IPv6 prefix with the IPv4 address's last number (.10 -> ::10).
NODES6 = dict((node, LAB_SUBNET6.split("/", maxsplit=1)[0] + address.rsplit(".", 1)[1]) for node, address in NODES.items())
LOCK = "/tmp/netlab-%s.lock" % LAB_INSTANCE
# The lab's first and second node, by name (sorted, as the inventory lists them).
NODE1, NODE2 = (sorted(NODES) + [None, None])[:2]
TLS_INVENTORY = os.path.join(ROOT, "extensions", "molecule", "tls", "inventory")
PLAYBOOKS = os.path.join(ROOT, "tests", "integration", "playbooks")
# One line per ansible-playbook run of a lab case (issue 25: where a case's minutes go): the case,
# the playbook and its options, the wall seconds, the load average before and after.
PLAYBOOK_TIMES = os.path.join(ROOT, "build", "test", "playbook-times.tsv")
# Upstream flanneld v0.10.0, for comparison only: beside the project (never inside it);
# NETLAB_UPSTREAM_FLANNELD points elsewhere (e.g. from a git worktree).
UPSTREAM_FLANNELD = os.environ.get("NETLAB_UPSTREAM_FLANNELD") or os.path.join(
    os.path.dirname(ROOT), "shared", "upstream", "flanneld-v0.10.0")


def run(argv, check=True, timeout=600, **kwargs):
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout, check=False, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s" % (" ".join(argv), result.returncode, result.stdout[-4000:]))
    return result


def ansible_playbook(args, extra_vars=None, inventories=(), timeout=600):
    """Run ansible-playbook from the checkout; returns (rc, output with whitespace runs collapsed)."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    argv = [os.path.join(BIN, "ansible-playbook")]
    for inventory in inventories:
        argv += ["-i", inventory]
    if extra_vars is not None:
        argv += ["-e", json.dumps(extra_vars)]
    load_before, started = _load(), time.monotonic()
    result = run(argv + list(args), check=False, timeout=timeout, env=env, cwd=ROOT)
    shown = list(args) + (["-e " + ",".join(sorted(extra_vars))] if extra_vars else [])
    _record_time(shown, time.monotonic() - started, load_before, result.returncode)
    return result.returncode, re.sub(r"\s+", " ", result.stdout)


def _load():
    with open("/proc/loadavg") as handle:
        return handle.read().split()[0]


def _record_time(args, seconds, load_before, returncode):
    case = os.environ.get("PYTEST_CURRENT_TEST", "-").rsplit(" (", 1)[0]
    what = " ".join((os.path.relpath(arg, ROOT) if arg.startswith(ROOT + os.sep) else os.path.basename(arg))
                    if os.path.isabs(arg) else arg for arg in args)
    os.makedirs(os.path.dirname(PLAYBOOK_TIMES), exist_ok=True)
    with open(PLAYBOOK_TIMES, "a") as handle:
        handle.write("%s\t%s\t%.1f\trc %d\tload %s -> %s\n" % (case, what[:160], seconds, returncode, load_before,
                                                               _load()))


def _held_by_an_ancestor(path):
    """Whether a process this one descends from holds the flock(2) lock on path, as in
    `flock /tmp/netlab-lab.lock pytest tests/integration/...`: taking the lock again here would wait
    for ever on our own parent (a second open file, so a second lock)."""
    status = os.stat(path)
    device = "%02x:%02x:%d" % (os.major(status.st_dev), os.minor(status.st_dev), status.st_ino)
    with open("/proc/locks") as handle:
        # "17: FLOCK  ADVISORY  WRITE 10135 fe:00:2146497 0 EOF"; a waiter's line has "->" before FLOCK.
        holders = set(int(fields[4]) for fields in (line.split() for line in handle)
                      if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == device)
    pid = os.getpid()
    while pid > 1:
        try:
            with open("/proc/%d/stat" % pid) as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])  # the parent: after "(comm) state"
        except (OSError, IndexError, ValueError):
            return False
        if pid in holders:
            return True
    return False


# This process's hold on the lab's lock: how many holders (a case, a hand-over below) share it.
_HOLD = {"depth": 0, "handle": None, "path": None}


def _acquire(path):
    if _HOLD["depth"] == 0:
        handle = open(path, "a")
        # Held by a parent (a wrapped run): hold it through that; taking it again would wait for ever.
        if not _held_by_an_ancestor(path):
            fcntl.flock(handle, fcntl.LOCK_EX)
        _HOLD.update(handle=handle, path=path)
    elif _HOLD["path"] != path:
        raise AssertionError("lab lock %s taken while %s is held" % (path, _HOLD["path"]))
    _HOLD["depth"] += 1


def _release():
    _HOLD["depth"] -= 1
    if _HOLD["depth"] == 0:
        _HOLD["handle"].close()  # closing the file releases the flock(2) lock
        _HOLD.update(handle=None, path=None)


@contextlib.contextmanager
def lab_lock(path=LOCK):
    """Hold the lab's lock; already held by a parent process (a wrapped run) or by this process (a
    hand-over between two cases, below), hold it through that."""
    _acquire(path)
    try:
        yield
    finally:
        _release()


# A lab state a case leaves for the next one instead of bringing the inventory's config back
# itself (issue 25: a return to vxlan and its verify.yml between two cases cost a minute, when the
# next case's first site.yml run proves the same return). {"state": name, "restore": callable}.
_HANDED_OVER = {}


def hand_over(state, restore):
    """Call at the end of a case, under the lock: leave the lab in `state` for the next case that
    starts from it (ensure_lab(start_from=...)) and keep the lock held until then, so that no other
    session finds the lab off its config. `restore()` brings the inventory's config back, with the
    checks the case would have run on that return; it runs when the next case does not start from
    `state`, or at the end of the session (restore_handed_over_lab)."""
    assert not _HANDED_OVER, "a hand-over is pending: %s" % _HANDED_OVER["state"]
    assert _HOLD["depth"] > 0, "hand_over outside the lab's lock"
    _acquire(_HOLD["path"])
    _HANDED_OVER.update(state=state, restore=restore)


def _take_over(start_from):
    """The state handed over when it is one of start_from (the lab stays in it), else None (a
    pending state restored first). The hand-over's hold on the lock ends either way."""
    if not _HANDED_OVER:
        return None
    state, restore = _HANDED_OVER.pop("state"), _HANDED_OVER.pop("restore")
    try:
        if state in start_from:
            return state
        restore()
        return None
    finally:
        _release()


def restore_handed_over_lab():
    """The end of the session: a state no case took is restored (its checks run there)."""
    _take_over(())


def docker_exec(node, script, stdin=None):
    return run(["docker", "exec", "-i", node, "sh", "-c", script], input=stdin).stdout


# Read inside a node: the v2 keyspace under the flannel prefix, over http or (when the lab runs
# etcd on TLS) https with the member certificate the etcd role installs.
ETCD_DUMP = r"""
import json, re, ssl, urllib.request
env = open("/etc/default/etcd").read()
url = re.search(r'ETCD_ADVERTISE_CLIENT_URLS="?([^",\s]+)', env).group(1)
context = None
if url.startswith("https"):
    context = ssl.create_default_context(cafile="/etc/etcd/pki/ca.pem")
    context.load_cert_chain("/etc/etcd/pki/member.pem", "/etc/etcd/pki/member-key.pem")
keys = {}
def walk(node):
    if node.get("dir"):
        for child in node.get("nodes", []):
            walk(child)
    else:
        keys[node["key"]] = node.get("value")
try:
    answer = urllib.request.urlopen(url + "/v2/keys/coreos.com/network?recursive=true&sorted=true&quorum=true",
                                    context=context, timeout=10)
    walk(json.load(answer)["node"])
except urllib.error.HTTPError as error:
    if error.code != 404:
        raise
print(json.dumps(keys, sort_keys=True))
"""

# Read inside a node: what the roles manage on it.
HOST_STATE = r"""
for f in /etc/docker/daemon.json /etc/systemd/system/flanneld.service /etc/default/flanneld /etc/default/etcd \
         /etc/systemd/system/docker.service.d/60-netlab-forward.conf /etc/sysctl.d/60-netlab-forward.conf \
         /run/flannel/subnet.env; do
  printf '%s ' "$f"; if [ -e "$f" ]; then sha256sum < "$f" | cut -c1-16; else echo absent; fi
done
for u in etcd flanneld docker; do echo "$u $(systemctl is-active $u)"; done
ip -d link show flannel.100 2>&1 | sed 's/ qdisc.*//'
ip -4 -br addr show dev docker0
iptables -w -S FORWARD
echo "masquerade rules: $(iptables -w -t nat -S POSTROUTING | grep -c 'flanneld masq')"
"""


def lab_snapshot():
    """{'etcd': {key: value}, node: host state text} for the whole lab."""
    snapshot = {"etcd": json.loads(docker_exec(NODE1, "python3 -", stdin=ETCD_DUMP))}
    for node in NODES:
        snapshot[node] = docker_exec(node, HOST_STATE)
    return snapshot


AGENT_BUILD = os.path.join(ROOT, "build", "flanneld.pyz")
INSTALLED_AGENT = "/usr/local/lib/netlab-flannel/flanneld.pyz"


def own_agent_installed():
    """Whether every node has this checkout's agent zipapp installed, byte for byte. Two builds are
    never identical (the zipapp records when it was built), so another checkout's site.yml run
    (another session on the shared lab) shows here: a case that needs this checkout's agent and
    role in place runs site.yml only then, not as a matter of course."""
    if not os.path.exists(AGENT_BUILD):
        return False
    with open(AGENT_BUILD, "rb") as handle:
        want = hashlib.sha256(handle.read()).hexdigest()
    for node in NODES:
        result = run(["docker", "exec", node, "sha256sum", INSTALLED_AGENT], check=False)
        if result.returncode != 0 or result.stdout.split()[:1] != [want]:
            return False
    return True


def lab_inventories():
    """The lab inventory, plus the TLS scenario's when the lab's etcd serves https."""
    inventories = [LAB_INVENTORY]
    env = docker_exec(NODE1, "cat /etc/default/etcd")
    if "ETCD_LISTEN_CLIENT_URLS=\"https" in env and os.path.isdir(TLS_INVENTORY):
        inventories.append(TLS_INVENTORY)
    return inventories


def _lab_network_ok():
    result = run(["docker", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", LAB_NETWORK],
                 check=False)
    return result.returncode == 0 and sorted(result.stdout.split()) == sorted([LAB_SUBNET, LAB_SUBNET6])


def _lab_ready():
    if not _lab_network_ok():
        return False
    for node in NODES:
        state = run(["docker", "inspect", "-f", "{{.State.Running}}", node], check=False)
        if state.stdout.strip() != "true":
            return False
        active = run(["docker", "exec", node, "systemctl", "is-active", "etcd", "flanneld", "docker"], check=False)
        if active.stdout.split() != ["active"] * 3:
            return False
    return True


# The image id the nodes ran from when this process last brought the lab up itself.
_NODE_IMAGE_SEEN = []


def _node_images():
    result = run(["docker", "inspect", "-f", "{{.Image}}"] + sorted(NODES), check=False)
    return set(result.stdout.split()) if result.returncode == 0 else set()


def ensure_lab(start_from=(), passes_on=()):
    """Bring the lab up and provision it when it is not (call with the lock held). A state the
    previous case handed over (hand_over) is returned, the lab left in it, when it is one of
    start_from; one of passes_on stays handed over, for the case after this one (which changes
    nothing on the lab), and None is returned; any other is restored first, and None returned."""
    if _HANDED_OVER and _HANDED_OVER["state"] in passes_on:
        return None
    taken = _take_over(start_from)
    if taken is not None:
        return taken
    # Fast path, taken before each case: the nodes still run from the image this process checked
    # (so from this checkout's ssh key) and the lab is provisioned.
    if _NODE_IMAGE_SEEN and _node_images() == set(_NODE_IMAGE_SEEN) and _lab_ready():
        return
    # Otherwise both scripts: no-ops when current, and they replace nodes made for another
    # checkout's ssh key (running nodes this checkout could not log in to would pass the checks below).
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), NETLAB_INVENTORY=LAB_INVENTORY)
    run(["bash", os.path.join(ROOT, "lab", "build-images.sh")], timeout=900, env=env)
    run(["bash", os.path.join(ROOT, "lab", "nodes.sh"), "up"], timeout=900, env=env)
    _NODE_IMAGE_SEEN[:] = _node_images()
    if _lab_ready():
        return
    if not _lab_network_ok():
        raise AssertionError("docker network %s is not %s and %s after nodes.sh up" % (LAB_NETWORK, LAB_SUBNET, LAB_SUBNET6))
    rc, output = ansible_playbook([os.path.join(ROOT, "playbooks", "site.yml")], inventories=lab_inventories(),
                                  timeout=1200)
    if rc != 0:
        raise AssertionError("site.yml failed while provisioning the lab:\n" + output[-4000:])
