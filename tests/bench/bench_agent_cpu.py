"""The agent's CPU per lease event, per thread, builds alternated ("method A" in BENCHMARKS.md).

Prints figures; asserts nothing. For each round and each zipapp in turn (so that they alternate
and share the machine's load): one agent on a namespace host beside a real etcd (tests/support
Cluster), `--writes` fake peer leases written 20 ms apart, and the CPU time each of the agent's
threads ran meanwhile (/proc/<pid>/task/*/schedstat, ns resolution: load-independent, unlike a
wall figure) divided by the writes. The main thread's share is the lease events' own work; the
others' is mostly the kernel-events thread's wake-ups for the kernel's announcements.

    python tests/bench/bench_agent_cpu.py BEFORE.pyz,AFTER.pyz [--rounds 3] [--writes 170]
"""

import argparse
import os
import time

# First: puts .collections and tests/ on sys.path, as pytest.ini does for the tests.
import benchpath  # noqa: F401  pylint: disable=unused-import

from support.cluster import Cluster, numbered_vxlan_peer
from support.netns import Lab

WRITE_INTERVAL = 0.02


def thread_cpu(pid):
    """{"main": CPU ns so far of the main thread, "others": of the other threads together (the
    kernel-events thread, /healthz's; Python does not name them to the kernel)}."""
    found = {"main": 0, "others": 0}
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, task)) as handle:
                found["main" if int(task) == pid else "others"] += int(handle.read().split()[0])
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return found


def one_run(zipapp, writes):
    """{"main", "others": ms of CPU per lease event} of one agent from `zipapp`."""
    lab = Lab()
    try:
        with Cluster(lab, zipapp, name="bench-agent-cpu") as cluster:
            agent = cluster.agent(lab.add_host())
            agent.wait_ready(30)
            time.sleep(2)  # start-up's own work done
            before = thread_cpu(agent.process.pid)
            for number in range(writes):
                subnet, attrs = numbered_vxlan_peer(number)
                cluster.registry.create_lease(subnet, attrs, 3600)
                time.sleep(WRITE_INTERVAL)
            time.sleep(1)  # the last event handled
            after = thread_cpu(agent.process.pid)
            return dict((name, (ns - before[name]) / 1e6 / writes) for name, ns in after.items())
    finally:
        lab.cleanup()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zipapps", help="comma-separated zipapps, alternated in each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=170)
    args = parser.parse_args()
    for number in range(args.rounds):
        for zipapp in args.zipapps.split(","):
            threads = one_run(zipapp, args.writes)
            print("round %d %s: %.3f ms CPU per lease event (%s); load %.2f" % (
                number + 1, zipapp, sum(threads.values()),
                ", ".join("%s %.3f" % item for item in sorted(threads.items())), os.getloadavg()[0]), flush=True)


if __name__ == "__main__":
    main()
