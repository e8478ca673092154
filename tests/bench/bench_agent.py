"""make bench-agent: lease-write-to-route latency, fan-out to many agents, agent RSS and idle CPU.

Prints figures; asserts nothing about speed. Method (also in BENCHMARKS.md): agents are the built
zipapp running in namespace hosts, etcd runs in the LAN namespace, peers are fake leases written
with the registry. A netlink socket opened inside each watching host's namespace timestamps the
RTM_NEWROUTE for the peer's subnet; latency = that time minus the time just before the etcd write.
"""

import argparse
import os
import select
import socket
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "agent"))
sys.path.insert(0, os.path.join(HERE, "..", "..", ".collections"))  # the checkout as netlab.flannel
from cluster import Cluster, build_agent, wait_for  # noqa: E402
from netns import Lab  # noqa: E402
from pyroute2 import netns as pyroute2_netns  # noqa: E402
from pyroute2.netlink.rtnl.rtmsg import rtmsg  # noqa: E402

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import LeaseAttrs  # noqa: E402
from netaddr import IPNetwork  # noqa: E402

RTMGRP_IPV4_ROUTE = 0x40
RTM_NEWROUTE = 24


def route_socket(ns):
    """A netlink socket subscribed to IPv4 route changes inside namespace `ns`."""
    pyroute2_netns.pushns(ns)
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.bind((0, RTMGRP_IPV4_ROUTE))
    finally:
        pyroute2_netns.popns()
    return sock


def new_route_destinations(data):
    """The 'dst/len' of every RTM_NEWROUTE in one netlink datagram (decoded by pyroute2)."""
    found, offset = [], 0
    while offset + 16 <= len(data):
        length = int.from_bytes(data[offset:offset + 4], sys.byteorder)
        if length < 16:
            break
        if int.from_bytes(data[offset + 4:offset + 6], sys.byteorder) == RTM_NEWROUTE:
            message = rtmsg(data[offset:offset + length])
            message.decode()
            if message.get_attr("RTA_DST"):
                found.append("%s/%d" % (message.get_attr("RTA_DST"), message["dst_len"]))
        offset += (length + 3) & ~3
    return found


def measure_joins(cluster, sockets, joins, first_octet):
    """Write `joins` fake peer leases one at a time.

    Returns (per join the slowest watcher's latency, per join the etcd write's own duration), in ms.
    """
    slowest, writes = [], []
    for number in range(joins):
        subnet = IPNetwork("10.%d.%d.0/20" % (first_octet + number // 16, (number % 16) * 16))
        attrs = LeaseAttrs("172.31.250.%d" % (100 + number % 100), "vxlan", "0e:00:00:00:%02x:%02x"
                           % (number // 256, number % 256))
        pending = dict((sock.fileno(), sock) for sock in sockets)
        started = time.perf_counter()
        cluster.registry.create_lease(subnet, attrs, 600)
        writes.append((time.perf_counter() - started) * 1000)
        latest = started
        deadline = started + 10
        while pending and time.perf_counter() < deadline:
            ready = select.select(list(pending.values()), [], [], 0.5)[0]
            now = time.perf_counter()
            for sock in ready:
                if str(subnet) in new_route_destinations(sock.recv(65536)):
                    pending.pop(sock.fileno())
                    latest = now
        if pending:
            raise SystemExit("join %d: %d agents never programmed %s" % (number, len(pending), subnet))
        slowest.append((latest - started) * 1000)
        time.sleep(0.02)
    return slowest, writes


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def process_figures(pid, idle_seconds):
    with open("/proc/%d/status" % pid) as handle:
        rss = [int(line.split()[1]) for line in handle if line.startswith("VmRSS")][0]

    def cpu_ticks():
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    before = cpu_ticks()
    time.sleep(idle_seconds)
    used = (cpu_ticks() - before) / os.sysconf("SC_CLK_TCK")
    return rss / 1024.0, 100.0 * used / idle_seconds


def agent_pid(agent):
    """The Python process under `ip netns exec` (exec replaces it, so it is the same PID)."""
    return agent.process.pid


def report(title, values):
    print("%-44s n=%-4d p50=%7.2f ms  p99=%7.2f ms  max=%7.2f ms"
          % (title, len(values), statistics.median(values), percentile(values, 0.99), max(values)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joins", type=int, default=60)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=20)
    args = parser.parse_args()
    print("machine: %d cores, load average %s at start" % (os.cpu_count(), " ".join(
        "%.2f" % value for value in os.getloadavg())))
    agent_path = build_agent(tempfile.mkdtemp(prefix="netlab-bench-"))
    lab = Lab()
    try:
        with Cluster(lab, agent_path) as cluster:
            hosts = [lab.add_host() for _number in range(args.agents)]
            single = cluster.agent(hosts[0])
            wait_for(lambda: single.healthz()[0] == 200, 20, what="first agent healthy")
            rss, cpu = process_figures(agent_pid(single), args.idle_seconds)
            print("agent RSS after start-up: %.1f MB; idle CPU over %.0f s: %.3f %% of one core"
                  % (rss, args.idle_seconds, cpu))
            latencies, writes = measure_joins(cluster, [route_socket(hosts[0].ns)], args.joins, 20)
            report("etcd lease write alone (part of the above)", writes)
            report("lease write -> route, 1 watching agent", latencies)
            others = [cluster.agent(host) for host in hosts[1:]]
            for agent in others:
                wait_for(lambda: agent.healthz()[0] == 200, 120, what="%s healthy" % agent.host.name)
            sockets = [route_socket(host.ns) for host in hosts]
            report("lease write -> route, slowest of %d agents" % len(sockets),
                   measure_joins(cluster, sockets, args.joins, 40)[0])
            rss_all = [process_figures(agent_pid(agent), 0.01)[0] for agent in [single] + others]
            print("agent RSS with %d peers: median %.1f MB, max %.1f MB"
                  % (len(hosts) - 1 + 2 * args.joins, statistics.median(rss_all), max(rss_all)))
    finally:
        lab.cleanup()
        print("load average at the end: %s" % " ".join("%.2f" % value for value in os.getloadavg()))


if __name__ == "__main__":
    main()
