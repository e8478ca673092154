"""Echo requests lost between the lab's test containers while a command runs (a rolling restart,
a config change, a member stopped), every ordered pair pinging every 0.1 s. Run it on a
provisioned lab, holding the lab lock:

  flock /tmp/netlab-lab.lock .venv/bin/python tests/bench/bench_lab_pairs.py [--from-hosts] NODES -- COMMAND...

NODES: the lab's node count (docker-node1..N with test1..N, as verify.yml leaves them).
--from-hosts: each node sends from its own network namespace instead of its test container (the
senders survive a Docker restart; the lost replies are each container's time unreachable).
Prints the command's exit code and wall time, the machine's load, and lost/sent per pair.
"""

import argparse
import os
import subprocess
import sys
import time

import benchpath  # noqa: F401  pylint: disable=unused-import
from support.pair_pings import PairPings, describe, lost


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--from-hosts", action="store_true")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of pings before and after the command")
    parser.add_argument("nodes", type=int)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    containers = dict(("docker-node%d" % index, "test%d" % index) for index in range(1, args.nodes + 1))
    pings = PairPings(containers, from_containers=not args.from_hosts)
    pings.start()
    time.sleep(args.settle)
    load_before = os.getloadavg()
    started = time.monotonic()
    result = subprocess.run(command, check=False)
    wall = time.monotonic() - started
    load_after = os.getloadavg()
    time.sleep(args.settle)
    counts = pings.stop()
    sent = sum(count[0] for count in counts.values() if count[0] is not None)
    print("command rc=%d in %.1f s; load %.2f/%.2f/%.2f before, %.2f/%.2f/%.2f after"
          % ((result.returncode, wall) + load_before + load_after))
    print("pings every %.1f s from %s over %.0f s: %d lost of %d sent (%d pairs, %d without a summary)"
          % (pings.interval, "hosts" if args.from_hosts else "containers", pings.seconds, lost(counts), sent,
             len(counts), sum(1 for count in counts.values() if count[0] is None)))
    print("per pair (sender->receiver received/sent): " + describe(counts))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
