"""make bench-memory: where the agent's resident memory goes, and how much it holds.

Prints figures; asserts nothing. Two parts:
- Imports: a fresh interpreter (Debian's python3 by default, as on the lab nodes) imports the
  agent's libraries from the built zipapp one step at a time, as the agent does (with its slim
  import path, flannel.slim); VmRSS after each step. `--no-slim` shows the plain imports.
- Agent: the zipapp run by that interpreter on a namespace host against a real etcd: VmRSS once
  healthy, then with `--peers` fake peer leases programmed (counted on its /metrics); once with
  no flannel.slim step, then adding one step at a time ($NETLAB_AGENT_SLIM), to show what each saves.
"""

import argparse
import os
import subprocess
import time
import urllib.request

# First: puts .collections and tests/ on sys.path, as pytest.ini does for the tests.
import benchpath

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.slim import STEPS, STEPS_VARIABLE
from support.cluster import HEALTHZ_PORT, Cluster, build_agent, numbered_vxlan_peer, wait_for
from support.netns import Lab

IMPORT_STEPS = [
    ("the zipapp on sys.path", "import sys; sys.path.insert(0, ZIPAPP)"),
    ("flannel.slim applied", "SLIM and __import__('flannel.slim').slim.apply([], {})"),
    ("flags (cli: netaddr, python-etcd)", "import flannel.cli"),
    ("daemon, registry, healthz", "import flannel.daemon"),
    ("netlink (pyroute2 IPRoute) and the vxlan backend", "import flannel.backends.vxlan"),
    ("an IPRoute socket used", "flannel.netlink.IPRoute().get_links()"),
    ("prometheus_client, a scrape of its process series",
     "import flannel.metrics, prometheus_client as p; r = p.CollectorRegistry(); p.ProcessCollector(registry=r); "
     "p.generate_latest(r)"),
    ("garbage collected", "import gc; gc.collect()"),
]
PROBE = """
import sys
ZIPAPP, SLIM = sys.argv[1], sys.argv[2] == "1"
def rss():
    with open("/proc/self/status") as handle:
        return [int(line.split()[1]) for line in handle if line.startswith("VmRSS")][0] / 1024.0
print("%.2f" % rss(), flush=True)
for statement in sys.stdin.read().split("\\n"):
    exec(statement)
    print("%.2f %d" % (rss(), len(sys.modules)), flush=True)
"""


def import_steps(python, zipapp, slim):
    statements = "\n".join(statement for _title, statement in IMPORT_STEPS)
    result = subprocess.run([python, "-c", PROBE, zipapp, "1" if slim else "0"], input=statements,
                            stdout=subprocess.PIPE, universal_newlines=True, check=True)
    lines = result.stdout.split()
    previous = float(lines[0])
    print("%-52s %8s %8s %8s" % ("import step (%s)" % ("slim" if slim else "plain"), "VmRSS", "+MB", "modules"))
    print("%-52s %8.1f" % ("bare interpreter", previous))
    for (title, _statement), rss, modules in zip(IMPORT_STEPS, lines[1::2], lines[2::2]):
        print("%-52s %8.1f %+8.1f %8s" % (title, float(rss), float(rss) - previous, modules))
        previous = float(rss)


def vm_rss(pid):
    with open("/proc/%d/status" % pid) as handle:
        return [int(line.split()[1]) for line in handle if line.startswith("VmRSS")][0] / 1024.0


def peers_programmed(host):
    try:
        with urllib.request.urlopen("http://%s:%d/metrics" % (host.address, HEALTHZ_PORT), timeout=2) as response:
            for line in response.read().decode().splitlines():
                if line.startswith('flannel_peers{backend="vxlan"}'):
                    return int(float(line.split()[-1]))
    except OSError:
        return None
    return None


def agent_figures(python, zipapp, peers, settle, steps):
    """(RSS idle, RSS with `peers`) of one agent run with flannel.slim's `steps` applied."""
    lab = Lab()
    os.environ[STEPS_VARIABLE] = ",".join(steps) or "none"  # the agent inherits it
    try:
        with Cluster(lab, zipapp, name="bench-memory", python=python) as cluster:
            host = lab.add_host()
            agent = cluster.agent(host)
            agent.wait_ready(30)
            time.sleep(settle)
            idle = vm_rss(agent.process.pid)
            for number in range(peers):
                subnet, attrs = numbered_vxlan_peer(number)
                cluster.registry.create_lease(subnet, attrs, 3600)
            wait_for(lambda: peers_programmed(host) == peers, 60, 0.2, "%d peers programmed (log:\n%s)"
                     % (peers, agent.log))
            time.sleep(settle)
            return idle, vm_rss(agent.process.pid)
    finally:
        del os.environ[STEPS_VARIABLE]
        lab.cleanup()


def compare(zipapps, python, peers, settle, rounds):
    print("load average %.2f" % os.getloadavg()[0])
    for number in range(rounds):
        for zipapp in zipapps:
            idle, loaded = agent_figures(python, zipapp, peers, settle, STEPS)
            print("round %d %s: RSS idle %.2f MB, with %d peers %.2f MB (load average %.2f)"
                  % (number + 1, zipapp, idle, peers, loaded, os.getloadavg()[0]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="/usr/bin/python3", help="interpreter running the agent")
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait before reading VmRSS")
    parser.add_argument("--no-slim", action="store_true", help="import steps without flannel.slim")
    parser.add_argument("--compare", metavar="ZIPAPP,ZIPAPP", help="only the agent's RSS (every flannel.slim step) "
                        "for each of these zipapps in turn, --rounds times, so that builds alternate")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.compare:
        compare(args.compare.split(","), args.python, args.peers, args.settle, args.rounds)
        return
    workdir = os.path.join(benchpath.ROOT, "build", "bench")
    os.makedirs(workdir, exist_ok=True)
    zipapp = build_agent(workdir)
    print("interpreter: %s (%s)" % (args.python, subprocess.check_output([args.python, "--version"],
                                                                         universal_newlines=True).strip()))
    import_steps(args.python, zipapp, not args.no_slim)
    print("%-44s %14s %18s" % ("agent, flannel.slim steps applied", "RSS idle", "RSS %d peers" % args.peers))
    previous = None
    for count in range(len(STEPS) + 1):
        steps = STEPS[:count]
        idle, loaded = agent_figures(args.python, zipapp, args.peers, args.settle, steps)
        saved = "" if previous is None else "(%+.1f)" % (idle - previous)
        label = "+ " + steps[-1] if steps else "none (plain imports)"
        print("%-44s %7.1f MB %-7s %9.1f MB" % (label, idle, saved, loaded))
        previous = idle


if __name__ == "__main__":
    main()
