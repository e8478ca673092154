"""Run the test tiers of `make test` in three lanes and print one summary.

Two lab lanes run what needs a Docker lab, one tier after another, each on its own lab (both on
the docker network `netlab`, each with its own nodes and lock; lab/nodes.sh): the main lab lane
(inventories/lab, /tmp/netlab-lab.lock) runs the default Molecule scenario, then tests/integration's
lab cases but those of SECOND_LAB_FILES; the second lab lane (inventories/lab2, /tmp/netlab-lab2.lock)
runs every other Molecule scenario (tls: its molecule.yml names inventories/lab2), then
SECOND_LAB_FILES' lab cases, then takes its nodes down. The split is by file, balanced by the cases'
measured minutes (build/test/integration*.xml); a new file runs on the main lab. A lab playbook run
waits on its hosts for most of its wall time, so the two lab lanes fit on two cores: each slows the
other's playbook runs (1.3 to 2 times, BENCHMARKS.md), and the whole run still ends minutes sooner.
The default scenario ends where `make lab` does (the lab's own config,
verified), so it keeps its nodes: the integration cases start on them instead of bringing nodes up
and running site.yml once more (`--destroy never` also skips the scenario's first destroy, so
`molecule destroy` runs before it: the scenario still starts from fresh nodes). The other lane
runs, meanwhile, what shares nothing with the lab: lint, sanity, then pytest on each directory
under tests/ (a new directory is picked up, a new file in one too): tests/integration's cases that
do not use the lab (fixture `lab`) run in this lane as integration-controller; tests/agent's cases
that send no overlay traffic (marked control_plane) run next as agent-control, and the rest of
tests/agent waits for Molecule to end (its ping-loss counts are timing-sensitive; it runs beside
tests/integration's lab cases). Both tests/agent tiers run on pytest-xdist workers: each case has
namespaces, etcd and agents of its own and mostly waits. The tiers that only compute (lint, sanity,
tests/unit) run niced: they have minutes to spare in their lane, and the CPU they leave goes to the
lab lanes, which set the run's wall time.

Each tier's output goes to build/test/<tier>.log; pytest tiers also write build/test/<tier>.xml
(JUnit) and their 15 slowest cases (--durations); build/test/playbook-times.tsv has one line per
ansible-playbook run of tests/integration (case, playbook, seconds, load). A tier that is not pytest counts as one test.
The summary (also in build/test/summary.txt) lists each tier with its counts, minutes and CPU
minutes (its own processes; a lab's nodes run under Docker, outside them), the whole machine's busy
share and CPU minutes, and ends with the line "N passed, M failed"; the exit status is 1 when any tier failed.

Usage: run_tests.py [TIER ...]   (names or prefixes, e.g. `unit etcd` or `molecule`; default all)
"""

import glob
import os
import subprocess
import sys
import threading
import time
from xml.etree import ElementTree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
OUT = os.path.join(ROOT, "build", "test")
LOCK = "/tmp/netlab-lab.lock"
# The second lab (its inventory's netlab_lab_instance names its lock and node label).
SECOND_LAB_INVENTORY = os.path.join(ROOT, "inventories", "lab2")
SECOND_LAB_LOCK = "/tmp/netlab-lab2.lock"
# tests/integration files whose lab cases run on the second lab, balanced by the cases' seconds in
# session 10's fresh-clone runs (two lab lanes, load 2-8): main lab: the default scenario 4.9-5.1 min,
# test_n_nodes 489 (about 460 after its two last removals became one run), test_perf 139,
# test_wireguard_lab 120, test_rendered_files_lab 28, test_status_picture 25 (about 19.0 min);
# second lab: the tls scenario 7.0-8.0 min, test_config_change_lab 454, test_upstream_agent 156,
# test_bad_inputs 82, test_env_quoting_lab 45 (about 19.2).
# Files that hand the lab over to one another (labtools.hand_over: test_n_nodes to test_perf and
# test_status_picture, test_wireguard_lab to test_perf's smoke) stay on one lab.
SECOND_LAB_FILES = ("test_bad_inputs.py", "test_config_change_lab.py", "test_env_quoting_lab.py",
                    "test_upstream_agent.py")
# Directories under tests/ that hold no test cases of their own (benchmarks, shared helpers).
NOT_TIERS = ("bench", "support")
# Lines of a failed tier's log printed at the end (the whole log stays in build/test/).
TAIL_LINES = 120
HEARTBEAT_SECONDS = 300
# Tiers that only compute run at this niceness (Tier.yields): lint, sanity and these directories.
YIELDING_NICENESS = 10
YIELDING_DIRECTORIES = ("unit",)


class Tier:
    def __init__(self, name, argv, junit=False, after=None, env=None, yields=False):
        self.name = name
        # A tier that only computes (no etcd, agent or lab timing in it) yields the CPU to the lab
        # lanes, which set the run's wall time; it has minutes to spare in its own lane.
        self.argv = (["nice", "-n", str(YIELDING_NICENESS)] if yields else []) + argv
        self.junit = junit
        self.after = after  # an event the tier waits for before it starts
        self.env = env  # environment variables set for the tier (its lab's inventory)
        self.log = os.path.join(OUT, name + ".log")
        self.xml = os.path.join(OUT, name + ".xml") if junit else None
        self.started = self.ended = None
        self.returncode = None
        self.cpu_seconds = 0.0  # user + system of the tier's processes (not the lab nodes' own)
        self.counts = {"passed": 0, "failed": 0, "skipped": 0}

    @property
    def ok(self):
        # pytest's 5: no case collected (e.g. a directory with no case off the lab).
        return self.returncode == 0 or (self.junit and self.returncode == 5)

    def minutes(self):
        return ((self.ended or time.time()) - self.started) / 60 if self.started else 0.0

    def read_counts(self):
        """Counts from the JUnit file; a tier that is not pytest (or left no file) is one test."""
        if self.xml and os.path.exists(self.xml):
            try:
                root = ElementTree.parse(self.xml).getroot()
            except ElementTree.ParseError:
                root = None
            if root is not None:
                suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
                total = sum(int(suite.get("tests", 0)) for suite in suites)
                failed = sum(int(suite.get("failures", 0)) + int(suite.get("errors", 0)) for suite in suites)
                skipped = sum(int(suite.get("skipped", 0)) for suite in suites)
                # pytest exits non-zero without a failed case when, e.g., it is interrupted.
                if not self.ok and failed == 0:
                    failed = 1
                self.counts = {"passed": total - failed - skipped, "failed": failed, "skipped": skipped}
                return
        self.counts = {"passed": 1 if self.ok else 0, "failed": 0 if self.ok else 1, "skipped": 0}


def pytest_tier(directory, after=None, name=None, marks=None, workers=None, paths=None, options=(), env=None,
                yields=False):
    """workers: run the cases on that many pytest-xdist processes (cases that mostly wait); paths: the
    files to run (default the directory); env: variables set for the tier (its lab's inventory)."""
    name = name or os.path.basename(directory)
    xml = os.path.join(OUT, name + ".xml")
    argv = [sys.executable, "-m", "pytest"] + [os.path.relpath(path, ROOT) for path in paths or [directory]] + [
        "-q", "-rs", "--durations=15", "--junitxml=" + xml, "-o", "junit_family=xunit2"] + list(options) + (
        ["-m", marks] if marks else []) + (["-n", str(workers)] if workers else [])
    return Tier(name, argv, junit=True, after=after, env=env, yields=yields)


def molecule_scenarios():
    names = sorted(os.path.basename(os.path.dirname(path))
                   for path in glob.glob(os.path.join(ROOT, "extensions", "molecule", "*", "molecule.yml")))
    # default last (see the docstring); the others only reuse its create and destroy playbooks.
    return sorted(names, key=lambda name: name == "default")


def plan():
    """(main lab lane, second lab lane, other lane): lists of tiers run in order."""
    molecule_done = threading.Event()
    molecule = os.path.join(BIN, "molecule")
    second = dict(NETLAB_INVENTORY=SECOND_LAB_INVENTORY)
    lab = [Tier("molecule-default", ["flock", LOCK, "sh", "-c", '"$0" destroy -s default && "$0" test -s default '
                                     '--destroy never', molecule])
           for name in molecule_scenarios() if name == "default"]
    lab2 = [Tier("molecule-" + name, ["flock", SECOND_LAB_LOCK, molecule, "test", "-s", name], env=second)
            for name in molecule_scenarios() if name != "default"]
    directories = sorted(path.rstrip("/") for path in glob.glob(os.path.join(ROOT, "tests", "*", ""))
                         if os.path.basename(path.rstrip("/")) not in NOT_TIERS + ("integration",)
                         and not os.path.basename(path.rstrip("/")).startswith(("_", ".")))
    other = [Tier("lint", [os.path.join(BIN, "ansible-lint")], yields=True),
             Tier("sanity", ["bash", os.path.join(ROOT, "tools", "run-sanity.sh")], yields=True)]
    # tests/integration: the cases on a lab (marked `lab` by its conftest) in the lab lanes, the
    # others (module arguments on the controller) beside it, before the agent tier.
    integration = os.path.join(ROOT, "tests", "integration")
    if os.path.isdir(integration):
        on_second = [os.path.join(integration, name) for name in SECOND_LAB_FILES]
        ignored = ["--ignore=" + os.path.relpath(path, ROOT) for path in on_second]
        lab.append(pytest_tier(integration, marks="lab", options=ignored))
        lab2.append(pytest_tier(integration, name="integration-lab2", marks="lab", paths=on_second, env=second))
        # The second lab is a detail of the test suite: its nodes go at the end of its lane.
        lab2.append(Tier("lab2-down", ["flock", SECOND_LAB_LOCK, "bash", os.path.join(ROOT, "lab", "nodes.sh"),
                                       "down"], env=second))
        directories.append(integration)
    # Namespace tests last in their lane, those with traffic after Molecule (see the docstring).
    directories.sort(key=lambda path: os.path.basename(path) == "agent")
    for directory in directories:
        if directory == integration:
            other.append(pytest_tier(directory, name="integration-controller", marks="not lab"))
        elif os.path.basename(directory) == "agent":
            # Each case has namespaces, etcd and agents of its own and mostly waits (on backoffs,
            # stalls, pings): parallel workers (measured in BENCHMARKS.md, "Test suite").
            other.append(pytest_tier(directory, name="agent-control", marks="control_plane", workers=3))
            other.append(pytest_tier(directory, after=molecule_done, marks="not control_plane", workers=2))
        else:
            other.append(pytest_tier(directory, yields=os.path.basename(directory) in YIELDING_DIRECTORIES))
    return lab, lab2, other, molecule_done


def stamp(start):
    elapsed = int(time.time() - start)
    return "[%02d:%02d]" % (elapsed // 60, elapsed % 60)


def busy_ticks():
    """(busy, total) CPU ticks of the whole machine so far (/proc/stat)."""
    with open("/proc/stat") as handle:
        ticks = [int(field) for field in handle.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return sum(ticks) - idle, sum(ticks)


def load():
    with open("/proc/loadavg") as handle:
        return handle.read().split()[0]


def run_lane(tiers, start, printer, molecule_done, all_tiers):
    for tier in tiers:
        if tier.after is not None:
            tier.after.wait()
        tier.started = time.time()
        printer("%s %s: started (load %s)" % (stamp(start), tier.name, load()))
        with open(tier.log, "w") as log:
            try:
                child = subprocess.Popen(tier.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                         stdin=subprocess.DEVNULL, env=dict(os.environ, **(tier.env or {})))
                # wait4: the child's own CPU account, with every process it waited for.
                _pid, status, usage = os.wait4(child.pid, 0)
                tier.returncode = child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
                tier.cpu_seconds = usage.ru_utime + usage.ru_stime
            except OSError as error:
                log.write("cannot run %s: %s\n" % (tier.argv[0], error))
                tier.returncode = 127
        tier.ended = time.time()
        tier.read_counts()
        printer("%s %s: %s in %.1f min (%d passed, %d failed, %d skipped; load %s)"
                % (stamp(start), tier.name, "passed" if tier.ok else "FAILED", tier.minutes(),
                   tier.counts["passed"], tier.counts["failed"], tier.counts["skipped"], load()))
        # The agent tier waits for every Molecule scenario (in either lab lane) to end.
        if not any(other.name.startswith("molecule-") and other.ended is None for other in all_tiers):
            molecule_done.set()


def tail(path, lines):
    with open(path, errors="replace") as handle:
        return handle.readlines()[-lines:]


def main(selected):
    os.makedirs(OUT, exist_ok=True)
    # tests/support/labtools.py appends one line per lab playbook run: this run's only.
    if os.path.exists(os.path.join(OUT, "playbook-times.tsv")):
        os.remove(os.path.join(OUT, "playbook-times.tsv"))
    lab, lab2, other, molecule_done = plan()
    if selected:
        def wanted(tier):
            return any(tier.name == name or tier.name.startswith(name) for name in selected)
        unknown = [name for name in selected if not any(t.name.startswith(name) for t in lab + lab2 + other)]
        if unknown:
            print("run_tests: no tier named %s" % ", ".join(unknown), file=sys.stderr)
            return 2
        # The second lab's nodes go when any of its tiers ran.
        lab2 = [t for t in lab2 if wanted(t) or (t.name == "lab2-down" and any(wanted(u) for u in lab2))]
        lab, other = [t for t in lab if wanted(t)], [t for t in other if wanted(t)]
    tiers = lab + lab2 + other
    start = time.time()
    load_before, ticks_before = load(), busy_ticks()
    print_lock = threading.Lock()

    def printer(line):
        with print_lock:
            print(line, flush=True)

    printer("%s tiers: main lab lane %s; second lab lane %s; beside them %s; logs in %s (load %s, %d cores)"
            % (stamp(start), " ".join(t.name for t in lab) or "-", " ".join(t.name for t in lab2) or "-",
               " ".join(t.name for t in other) or "-", os.path.relpath(OUT, ROOT), load_before, os.cpu_count()))
    if not any(t.name.startswith("molecule-") for t in tiers):
        molecule_done.set()
    lanes = [threading.Thread(target=run_lane, args=(lane, start, printer, molecule_done, tiers))
             for lane in (lab, lab2, other)]
    for lane in lanes:
        lane.start()
    while any(lane.is_alive() for lane in lanes):
        for lane in lanes:
            lane.join(HEARTBEAT_SECONDS)
            if lane.is_alive():
                running = [t for t in tiers if t.started and t.ended is None]
                printer("%s running: %s (load %s)" % (stamp(start), ", ".join(
                    "%s %.0f min" % (t.name, t.minutes()) for t in running) or "-", load()))
                break

    failed = [t for t in tiers if not t.ok]
    for tier in failed:
        print("\n==== %s failed (rc %s): last %d lines of %s" % (tier.name, tier.returncode, TAIL_LINES,
                                                                 os.path.relpath(tier.log, ROOT)))
        sys.stdout.writelines(tail(tier.log, TAIL_LINES))
    totals = dict((key, sum(t.counts[key] for t in tiers)) for key in ("passed", "failed", "skipped"))
    busy, total = [after - before for after, before in zip(busy_ticks(), ticks_before)]
    lines = ["", "==== test summary: %d tiers, %.1f min wall, load %s before and %s after, %d cores %.0f %% busy"
             % (len(tiers), (time.time() - start) / 60, load_before, load(), os.cpu_count(),
                100.0 * busy / max(total, 1)),
             "%-24s %-7s %7s %7s %8s %8s %8s %8s" % ("tier", "result", "passed", "failed", "skipped", "minutes",
                                                     "at min", "cpu min")]
    for tier in tiers:
        lines.append("%-24s %-7s %7d %7d %8d %8.1f %8.1f %8.1f" % (
            tier.name, "ok" if tier.ok else "FAILED", tier.counts["passed"], tier.counts["failed"],
            tier.counts["skipped"], tier.minutes(), (tier.started - start) / 60 if tier.started else 0,
            tier.cpu_seconds / 60))
    lines.append("cpu min: each tier's own processes (a lab's nodes run under Docker, outside it); the whole "
                 "machine: %.1f cpu min" % (busy / os.sysconf("SC_CLK_TCK") / 60))
    lines.append("tests run: %d (lint, sanity, each Molecule scenario and lab2-down count as one; %d skipped)"
                 % (totals["passed"] + totals["failed"], totals["skipped"]))
    lines.append("%d passed, %d failed" % (totals["passed"], totals["failed"]))
    with open(os.path.join(OUT, "summary.txt"), "w") as handle:
        handle.write("\n".join(lines[1:]) + "\n")
    print("\n".join(lines), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
