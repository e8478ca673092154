"""make bench-agent: lease-write-to-route latency, fan-out to many agents, agent RSS and idle CPU,
for our agent and upstream flanneld v0.10.0 in the same run, with the ratio ours / upstream.

Prints figures; asserts nothing about speed. Method (also in BENCHMARKS.md): agents (the built
zipapp, or upstream's binary) run in namespace hosts, etcd runs in the LAN namespace, peers are
fake leases written with the registry. A netlink socket opened inside each watching host's
namespace timestamps the RTM_NEWROUTE for the peer's subnet; latency = that time minus the time
just before the etcd write. Each kind of agent gets a lab and an etcd of its own, one after the
other. Without upstream's binary its column is skipped with a message saying where it was looked for.
"""

import argparse
import os
import select
import socket
import statistics
import sys
import tempfile
import time

# First: puts .collections and tests/ on sys.path, as pytest.ini does for the tests.
import benchpath  # noqa: F401  pylint: disable=unused-import
from netaddr import IPNetwork
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ansible_collections.netlab.flannel.plugins.module_utils.flannel import netlink
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import LeaseAttrs
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.netlink.events import (
    FdbEvent, NeighbourEvent, RouteEvent)
from support.kernel_listener import Listener
from support.cluster import AGENT_KINDS, Cluster, build_agent, upstream_absent_reason
from support.netns import Lab

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
        # A VtepMAC of its own per lease, across the runs sharing one etcd: a copied one is skipped.
        attrs = LeaseAttrs("172.31.250.%d" % (100 + number % 100), "vxlan", "0e:00:00:%02x:%02x:%02x"
                           % (first_octet, number // 256, number % 256))
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


def cpu_seconds(pid):
    """CPU time the process's live threads have run so far, in ns resolution (schedstat), not the
    10 ms ticks of /proc/<pid>/stat, which round a Go agent's per-event work to zero."""
    total = 0
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, task)) as handle:
                total += int(handle.read().split()[0])
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return total / 1e9


def process_figures(pid, idle_seconds):
    """(RSS in MB, CPU used over `idle_seconds` in % of one core)."""
    with open("/proc/%d/status" % pid) as handle:
        rss = [int(line.split()[1]) for line in handle if line.startswith("VmRSS")][0]
    before = cpu_seconds(pid)
    time.sleep(idle_seconds)
    return rss / 1024.0, 100.0 * (cpu_seconds(pid) - before) / idle_seconds


def agent_pid(agent):
    """The agent's process under `ip netns exec` (exec replaces it, so it is the same PID)."""
    return agent.process.pid


def summary(values):
    return {"n": len(values), "p50": statistics.median(values), "p99": percentile(values, 0.99),
            "max": max(values)}


def report(kind, title, values):
    figures = summary(values)
    print("%-8s %-44s n=%-4d p50=%7.2f ms  p99=%7.2f ms  max=%7.2f ms"
          % (kind, title, figures["n"], figures["p50"], figures["p99"], figures["max"]))
    return figures


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    return None


def measure_repairs(host, rounds, device_rounds):
    """Ours only (upstream never repairs): {kind: [seconds]} from deleting one entry of a peer
    (cycling through the peers) to the kernel announcing it again, and from deleting flannel.100 to
    every peer's route announced again. A repair that never comes counts as None."""
    listener = Listener(host)
    found = {"route": [], "neighbour": [], "fdb": [], "device": []}
    try:
        state = netlink.overlay_state(100, ipr=listener.kernel)
        index = listener.kernel.link_lookup(ifname="flannel.100")[0]
        routes = [netlink.Route(r["dst"], r["gateway"], index, r["onlink"]) for r in state["routes"]]
        for number in range(rounds):
            route = routes[number % len(routes)]
            mac = next(n["mac"] for n in state["neighbours"] if n["ip"] == route.gateway)
            dst = next(f["dst"] for f in state["fdb"] if f["mac"] == mac)
            cases = (("route", lambda: netlink.delete_route(route, listener.kernel),
                      lambda e: isinstance(e, RouteEvent) and not e.removed and e.route == route),
                     ("neighbour", lambda: netlink.delete_neighbour(index, route.gateway, listener.kernel),
                      lambda e: isinstance(e, NeighbourEvent) and not e.removed and e.ip == route.gateway
                      and e.permanent),
                     ("fdb", lambda: netlink.delete_fdb(index, mac, dst, listener.kernel),
                      lambda e: isinstance(e, FdbEvent) and not e.removed and (e.mac, e.dst) == (mac, dst)))
            for kind, delete, restored in cases:
                started = time.monotonic()
                delete()
                back = _wait(lambda: listener.first_after(started, restored))
                found[kind].append(back - started if back else None)
                time.sleep(0.05)
        destinations = [route.dst for route in routes]
        for _round in range(device_rounds):
            started = time.monotonic()
            listener.kernel.link("del", index=listener.kernel.link_lookup(ifname="flannel.100")[0])
            back = _wait(lambda: listener.routes_back(started, destinations))
            found["device"].append(back - started if back else None)
            time.sleep(1.0)
    finally:
        listener.close()
    return found


def bench(kind, agent_path, args):
    """Every figure for one kind of agent, in a lab and an etcd of its own."""
    figures = {}
    lab = Lab()
    try:
        with Cluster(lab, agent_path, name="bench-" + kind, api=args.etcd_api) as cluster:
            hosts = [lab.add_host() for _number in range(args.agents)]
            flags = args.ours_flags.split() if kind == "ours" else []
            single = cluster.agent(hosts[0], *flags, kind=kind)
            single.wait_ready(20)
            figures["rss"], figures["cpu"] = process_figures(agent_pid(single), args.idle_seconds)
            print("%-8s agent RSS after start-up: %.1f MB; idle CPU over %.0f s: %.3f %% of one core"
                  % (kind, figures["rss"], args.idle_seconds, figures["cpu"]))
            cpu_before = cpu_seconds(agent_pid(single))
            latencies, writes = measure_joins(cluster, [route_socket(hosts[0].ns)], args.joins, 20)
            figures["cpu_per_event_one"] = 1000.0 * (cpu_seconds(agent_pid(single)) - cpu_before) / args.joins
            print("%-8s CPU per lease event, 1 watching agent: %.2f ms" % (kind, figures["cpu_per_event_one"]))
            figures["write"] = report(kind, "etcd lease write alone (part of the above)", writes)
            figures["one"] = report(kind, "lease write -> route, 1 watching agent", latencies)
            others = [cluster.agent(host, *flags, kind=kind) for host in hosts[1:]]
            for agent in others:
                agent.wait_ready(120)
            sockets = [route_socket(host.ns) for host in hosts]
            everyone = [single] + others
            cpu_before = sum(cpu_seconds(agent_pid(agent)) for agent in everyone)
            figures["many"] = report(kind, "lease write -> route, slowest of %d agents" % len(sockets),
                                     measure_joins(cluster, sockets, args.joins, 40)[0])
            # All CPU the agents used while the joins ran (periodic work included), per agent and join.
            figures["cpu_per_event"] = 1000.0 * (sum(cpu_seconds(agent_pid(agent)) for agent in everyone)
                                                 - cpu_before) / (len(everyone) * args.joins)
            print("%-8s CPU per lease event per agent during those joins: %.2f ms" % (kind, figures["cpu_per_event"]))
            rss_all = [process_figures(agent_pid(agent), 0.01)[0] for agent in everyone]
            figures["rss_peers"] = statistics.median(rss_all)
            peers = len(hosts) - 1 + 2 * args.joins
            print("%-8s agent RSS with %d peers: median %.1f MB, max %.1f MB"
                  % (kind, peers, figures["rss_peers"], max(rss_all)))
            figures["cpu_peers"] = process_figures(agent_pid(single), args.idle_seconds)[1]
            print("%-8s idle CPU with %d peers over %.0f s: %.3f %% of one core"
                  % (kind, peers, args.idle_seconds, figures["cpu_peers"]))
            if kind == "ours" and args.repairs and "-repair-on-events=false" not in flags:
                for what, seconds in sorted(measure_repairs(hosts[0], args.repairs, args.device_repairs).items()):
                    missing = seconds.count(None)
                    title = ("deleted %s -> back" % what if what != "device"
                             else "deleted flannel.100 -> all %d peers back" % peers)
                    figures["repair_" + what] = report(kind, title + (" (%d never)" % missing if missing else ""),
                                                       [1000 * value for value in seconds if value is not None])
    finally:
        lab.cleanup()
    return figures


def comparison(results, args):
    """The side-by-side table: one row per figure, ours, upstream and ours / upstream."""
    rows = [("lease write -> route, 1 watcher, p50 (ms)", lambda f: f["one"]["p50"]),
            ("lease write -> route, 1 watcher, p99 (ms)", lambda f: f["one"]["p99"]),
            ("lease write -> route, slowest of %d, p50 (ms)" % args.agents, lambda f: f["many"]["p50"]),
            ("lease write -> route, slowest of %d, p99 (ms)" % args.agents, lambda f: f["many"]["p99"]),
            ("CPU per lease event, 1 watcher (ms)", lambda f: f["cpu_per_event_one"]),
            ("CPU per lease event per agent, %d agents (ms)" % args.agents, lambda f: f["cpu_per_event"]),
            ("RSS after start-up (MB)", lambda f: f["rss"]),
            ("RSS with peers programmed, median (MB)", lambda f: f["rss_peers"]),
            ("idle CPU, no peers (% of one core)", lambda f: f["cpu"]),
            ("idle CPU, peers programmed (% of one core)", lambda f: f["cpu_peers"])]
    print("\n%-48s %10s %10s %16s" % ("figure", "ours", "upstream", "ours / upstream"))
    for title, pick in rows:
        ours = pick(results["ours"]) if "ours" in results else None
        upstream = pick(results["upstream"]) if "upstream" in results else None
        ratio = "%.2f" % (ours / upstream) if ours is not None and upstream else "-"
        shown = ["-" if value is None else "%.3f" % value for value in (ours, upstream)]
        print("%-48s %10s %10s %16s" % (title, shown[0], shown[1], ratio))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joins", type=int, default=60)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=20)
    parser.add_argument("--repairs", type=int, default=50,
                        help="ours only: deletions of each kind (route, neighbour, FDB entry) timed to their repair")
    parser.add_argument("--device-repairs", type=int, default=5,
                        help="ours only: deletions of flannel.100 timed to every peer routed again")
    parser.add_argument("--ours-flags", default="",
                        help="extra flags for our agents, e.g. '-reconcile-interval=10 -repair-on-events=false' "
                             "for the behaviour before repairs on kernel events")
    parser.add_argument("--kinds", default=",".join(AGENT_KINDS),
                        help="which agents to measure, in this order (default: %(default)s)")
    parser.add_argument("--etcd-api", choices=("v2", "v3"), default="v2",
                        help="v3: etcd with v2 off and our agent with -etcd-api=v3 (upstream v0.10 speaks v2 only)")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if any(kind not in AGENT_KINDS for kind in kinds):
        parser.error("--kinds: each must be one of %s, not %r" % (", ".join(AGENT_KINDS), args.kinds))
    print("etcd API %s; machine: %d cores, load average %s at start" % (args.etcd_api, os.cpu_count(), " ".join(
        "%.2f" % value for value in os.getloadavg())))
    agent_path = build_agent(tempfile.mkdtemp(prefix="netlab-bench-"))
    results = {}
    for kind in kinds:
        if kind == "upstream" and args.etcd_api == "v3":
            print("upstream column skipped: flanneld v0.10 speaks etcd v2 only")
            continue
        if kind == "upstream" and upstream_absent_reason():
            print("upstream column skipped: %s" % upstream_absent_reason())
            continue
        results[kind] = bench(kind, agent_path, args)
        print("load average after %s: %s" % (kind, " ".join("%.2f" % value for value in os.getloadavg())))
    comparison(results, args)


if __name__ == "__main__":
    main()
