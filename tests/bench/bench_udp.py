"""Container -> container throughput and latency over the udp backend, ours against upstream's.

Run as root: python tests/bench/bench_udp.py [seconds] [runs]. For each agent kind (ours: the
built zipapp; upstream: flanneld v0.10.0 with its C proxy, skipped with a message when absent)
it starts two namespace hosts with a real etcd, a container behind each, then prints:
iperf3 TCP one stream (Gbit/s, each run), ICMP echo RTT p50/p99 (idle and under load) and the
agent's RSS (with its forwarding workers) under load. Figures go to BENCHMARKS.md by hand.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

# First: puts .collections and tests/ on sys.path, as pytest.ini does for the tests.
import benchpath  # noqa: F401  pylint: disable=unused-import
from support.cluster import Cluster, build_agent, upstream_absent_reason, wait_for
from support.netns import Lab, ping, run_in

CONFIG = '{"Network": "10.0.0.0/8", "SubnetLen": 20, "Backend": {"Type": "udp"}}'

RTT_SCRIPT = r"""
import os, socket, struct, sys, time
address, count, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
sock.settimeout(1.0)
ident, rtts = os.getpid() & 0xFFFF, []
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
for seq in range(count):
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"netlabrt"
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    started = time.perf_counter()
    sock.sendto(body, (address, 0))
    try:
        while True:
            packet = sock.recv(2048)
            header = (packet[0] & 0x0F) * 4
            if packet[header] == 0 and struct.unpack("!HH", packet[header + 4:header + 8]) == (ident, seq):
                rtts.append((time.perf_counter() - started) * 1e6)
                break
    except socket.timeout:
        pass
    time.sleep(interval)
print(" ".join("%.1f" % rtt for rtt in rtts))
"""


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def rtts(container, address, count=200, interval=0.01):
    out = run_in(container.ns, [sys.executable, "-c", RTT_SCRIPT, address, count, interval]).stdout
    return [float(value) for value in out.split()]


def process_and_children(pid):
    """The agent's pid and its forwarding workers' (as strings)."""
    return [str(pid)] + subprocess.run(["pgrep", "-P", str(pid)], stdout=subprocess.PIPE,
                                       universal_newlines=True, check=False).stdout.split()


def rss_kb(pid):
    """(RSS, PSS) of a process and its children (the forwarding workers), in kB. The workers are
    forked, so their RSS counts the pages they share with the agent again; PSS splits those."""
    rss = pss = 0
    for one in process_and_children(pid):
        try:
            with open("/proc/%s/smaps_rollup" % one) as handle:
                fields = dict((line.split(":")[0], line.split()[1]) for line in handle if ":" in line)
            rss += int(fields["Rss"])
            pss += int(fields["Pss"])
        except (IOError, KeyError, IndexError):
            pass
    return rss, pss


def profile(agents, seconds):
    """py-spy (BENCH_PROFILE=1) on every forwarding worker of both hosts while iperf3 runs."""
    profilers, directory = [], tempfile.mkdtemp(prefix="py-spy-")
    for side, agent in zip(("sender", "receiver"), agents):
        for pid in subprocess.run(["pgrep", "-P", str(agent.process.pid)], stdout=subprocess.PIPE,
                                  universal_newlines=True, check=False).stdout.split():
            path = os.path.join(directory, "%s-%s.txt" % (side, pid))
            command = [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--nonblocking", "-r", "200",
                       "-f", "raw", "-o", path, "-d", str(max(1, seconds - 1)), "--pid", pid]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            profilers.append((side, pid, path, process))
    return profilers


def report_profiles(profilers):
    """Print, per worker, the share of samples per innermost function line (top 12)."""
    for side, pid, path, process in profilers:
        process.wait(60)
        totals, samples = {}, 0
        try:
            with open(path) as handle:
                for line in handle:
                    stack, _space, count = line.rstrip().rpartition(" ")
                    leaf = stack.split(";")[-1]
                    totals[leaf] = totals.get(leaf, 0) + int(count)
                    samples += int(count)
        except IOError:
            continue
        print("profile %s worker %s (%d samples):" % (side, pid, samples))
        for leaf, count in sorted(totals.items(), key=lambda item: -item[1])[:12]:
            print("  %5.1f%%  %s" % (100.0 * count / samples, leaf))


def cpu_seconds(pid):
    """(user, system) CPU seconds of a process and its children (the forwarding workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for one in process_and_children(pid):
        try:
            with open("/proc/%s/stat" % one) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            user += int(fields[11]) / float(ticks)
            system += int(fields[12]) / float(ticks)
        except (IOError, IndexError):
            pass
    return user, system


def losses(host):
    """Where packets were lost on a host: flannel0's drop counters and the UDP receive-buffer errors."""
    stats = json.loads(host.run(["ip", "-s", "-j", "link", "show", "flannel0"]).stdout)[0]["stats64"]
    udp = host.run(["nstat", "-az", "UdpRcvbufErrors", "UdpSndbufErrors"]).stdout.split()
    return "flannel0 rx dropped %d, tx dropped %d; %s" % (
        stats["rx"]["dropped"], stats["tx"]["dropped"],
        ", ".join("%s %s" % (udp[i], udp[i + 1]) for i in range(len(udp)) if udp[i].startswith("Udp")))


def measure(kind, agent_path, seconds, runs):
    lab = Lab(lan_prefix="172.31.249")
    try:
        with Cluster(lab, agent_path, config=CONFIG, name="bench-udp-" + kind) as cluster:
            hosts = [lab.add_host(), lab.add_host()]
            agents = [cluster.agent(host, kind=kind) for host in hosts]
            subnets = [agent.wait_env() for agent in agents]
            for agent in agents:
                agent.wait_ready()
            one, two = [lab.add_container(host, subnet) for host, subnet in zip(hosts, subnets)]
            wait_for(lambda: ping(one.ns, two.address, count=1), what="overlay up")
            idle = rtts(one, two.address)
            results, loaded, rss = [], [], []
            for _run in range(runs):
                server = subprocess.Popen(["ip", "netns", "exec", two.ns, "iperf3", "-s", "-1"],
                                          stdout=subprocess.DEVNULL)
                time.sleep(0.5)
                sampler = threading.Thread(target=lambda: (time.sleep(seconds / 2.0),
                                                           rss.append(rss_kb(agents[0].process.pid)),
                                                           loaded.extend(rtts(one, two.address, 50, 0.02))))
                sampler.start()
                profilers = profile(agents, seconds) if os.environ.get("BENCH_PROFILE") and kind == "ours" else []
                before = [cpu_seconds(agent.process.pid) for agent in agents]
                out = run_in(one.ns, ["iperf3", "-c", two.address, "-t", seconds, "-J"]).stdout
                after = [cpu_seconds(agent.process.pid) for agent in agents]
                sampler.join()
                report_profiles(profilers)
                for side, start, end in zip(("sender", "receiver"), before, after):
                    print("%-8s %s host's forwarding: %.2f s user + %.2f s system CPU in %d s"
                          % (kind, side, end[0] - start[0], end[1] - start[1], seconds))
                report = json.loads(out)
                results.append(report["end"]["sum_received"]["bits_per_second"] / 1e9)
                server.wait(10)
            print("%-8s TCP 1 stream, %d x %d s: %s Gbit/s (median %.2f)"
                  % (kind, runs, seconds, " ".join("%.2f" % value for value in results),
                     sorted(results)[len(results) // 2]))
            print("%-8s RTT idle: p50 %.0f us, p99 %.0f us; under load: p50 %.0f us, p99 %.0f us"
                  % (kind, percentile(idle, 0.5), percentile(idle, 0.99), percentile(loaded, 0.5),
                     percentile(loaded, 0.99)))
            for host in hosts:
                print("%-8s %s: %s" % (kind, host.name, losses(host)))
            print("%-8s memory under load (agent + workers on the sender): RSS %.1f MB, PSS %.1f MB"
                  % (kind, max(one[0] for one in rss) / 1024.0, max(one[1] for one in rss) / 1024.0))
            if kind == "ours":
                counters = subprocess.run(["grep", "-c", "dropped", agents[0].log_path], stdout=subprocess.PIPE,
                                          universal_newlines=True, check=False).stdout.strip()
                print("%-8s drop lines in the sender's log: %s" % (kind, counters))
            for agent in agents:
                agent.stop(signal.SIGTERM)
    finally:
        lab.cleanup()


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    kinds = sys.argv[3].split(",") if len(sys.argv) > 3 else ["ours", "upstream"]
    print("udp backend, container -> container over two namespace hosts (veth + bridge), %s, %d CPUs, "
          "load average %.2f" % (time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(), os.getloadavg()[0]))
    agent_path = build_agent(tempfile.mkdtemp(prefix="bench-udp-"))
    for kind in kinds:
        if kind == "upstream" and upstream_absent_reason():
            print("upstream: skipped: %s" % upstream_absent_reason())
            continue
        measure(kind, agent_path, seconds, runs)


if __name__ == "__main__":
    main()
