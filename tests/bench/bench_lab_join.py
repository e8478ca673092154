"""From a host's lease written (or deleted) in etcd to the route to it on every other lab host,
while a command runs (site.yml -l on a joining host, remove-host.yml -l on a leaving one). Run it
on a provisioned lab, holding the lab lock:

  flock /tmp/netlab-lab.lock .venv/bin/python tests/bench/bench_lab_join.py join|leave ADDRESS NODES -- COMMAND...

ADDRESS: the joining or leaving host's lab address (its lease's PublicIP); NODES: the other
nodes, docker-node1..N. docker-node1 watches the leases through its etcd member (v2 API) and
each other node its routing table (`ip monitor route`), every line stamped with the shared
kernel clock as it arrives; afterwards the lease event is matched with the first route added
(join) or deleted (leave) for its subnet on each node. Prints the command's exit code and wall
time, the machine's load and the delay per node.
"""

import json
import os
import subprocess
import sys
import time

import benchpath  # noqa: F401  pylint: disable=unused-import

# Lease events under the prefix, stamped as they arrive (v2 watch, from the member on the node).
WATCH = r"""
import json, sys, time, urllib.request
base = "http://127.0.0.1:2379/v2/keys/coreos.com/network/subnets"
index = int(urllib.request.urlopen(base, timeout=10).headers["X-Etcd-Index"])
while True:
    answer = json.load(urllib.request.urlopen("%s?wait=true&recursive=true&waitIndex=%d" % (base, index + 1)))
    node = answer["node"]
    index = node["modifiedIndex"]
    value = node.get("value") or (answer.get("prevNode") or {}).get("value") or "{}"
    print(json.dumps([time.time(), answer["action"], node["key"].rsplit("/", 1)[1], json.loads(value).get("PublicIP")]),
          flush=True)
"""
STAMP = "import sys, time\nfor line in sys.stdin:\n    print('%.6f %s' % (time.time(), line), end='', flush=True)\n"
TAG = "/tmp/netlab-bench-join"


def node_sh(node, command, stdin=None):
    return subprocess.run(["docker", "exec", "-i", node, "sh", "-c", command], input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120, check=False).stdout


def main():
    mode, address, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    command = sys.argv[4:]
    command = command[1:] if command[:1] == ["--"] else command
    nodes = ["docker-node%d" % index for index in range(1, count + 1)]
    node_sh("docker-node1", "cat > %s-watch.py" % TAG, stdin=WATCH)
    node_sh("docker-node1", "nohup python3 -u %s-watch.py > %s-watch.log 2>&1 & echo $! > %s-watch.pid" % (TAG, TAG, TAG))
    for node in nodes:
        node_sh(node, "cat > %s-stamp.py" % TAG, stdin=STAMP)
        node_sh(node, "nohup sh -c 'ip -4 monitor route | python3 -u %s-stamp.py' > %s-routes.log 2>&1 & "
                      "echo $! > %s-routes.pid" % (TAG, TAG, TAG))
    time.sleep(2)
    load_before = os.getloadavg()
    started = time.monotonic()
    result = subprocess.run(command, check=False)
    wall = time.monotonic() - started
    load_after = os.getloadavg()
    time.sleep(5)
    events = [json.loads(line) for line in node_sh("docker-node1", "cat %s-watch.log" % TAG).splitlines()
              if line.startswith("[")]
    wanted = "delete expire compareAndDelete".split() if mode == "leave" else "set create compareAndSwap update".split()
    lease = [event for event in events if event[3] == address and event[1] in wanted]
    print("command rc=%d in %.1f s; load %.2f/%.2f/%.2f before, %.2f/%.2f/%.2f after"
          % ((result.returncode, wall) + load_before + load_after))
    if not lease:
        print("no %s event for %s among %s" % (mode, address, events))
    else:
        stamp, action, key = lease[0][:3]
        subnet = key.replace("-", "/")
        delays = {}
        for node in nodes:
            for line in node_sh(node, "cat %s-routes.log" % TAG).splitlines():
                parts = line.split(" ", 1)
                wanted = ("Deleted " + subnet, subnet) if mode == "leave" else (subnet,)
                if len(parts) < 2 or not parts[1].startswith(wanted):
                    continue
                if (mode == "leave") == parts[1].startswith("Deleted "):
                    delays[node] = float(parts[0]) - stamp
                    break
        print("%s %s (%s at %.3f): %s" % (mode, subnet, action, stamp, ", ".join(
            "%s %s" % (node, ("%.3f s" % delays[node]) if node in delays else "none") for node in nodes)))
        if delays:
            print("slowest %.3f s over %d of %d nodes" % (max(delays.values()), len(delays), len(nodes)))
    node_sh("docker-node1", "kill $(cat %s-watch.pid); rm -f %s-watch.*" % (TAG, TAG))
    for node in nodes:
        node_sh(node, "pkill -P $(cat %s-routes.pid); kill $(cat %s-routes.pid); rm -f %s-*" % (TAG, TAG, TAG))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
