"""Measure VxlanBackend per-peer programming time inside a throw-away namespace, or the data
plane the agent programs.

Run as root: python tests/bench/bench_vxlan.py [peers]. Prints p50/p95 of add_peer() for new
peers and the time of full syncs (from empty, unchanged, one peer changed) for `peers` peers.
The backend runs with a plain IPRoute inside the namespace (`ip netns exec`), as the agent does.
It measures CPU and wall time of programming, not traffic.

python tests/bench/bench_vxlan.py --throughput AGENT.pyz[,AGENT.pyz...] [rounds] [seconds]: for
each round and each agent zipapp in turn (so that builds alternate), two namespace hosts with a
real etcd and the agent on each (vxlan, VNI 100), a container behind each, and iperf3 TCP, one
stream, container -> container for `seconds`: prints Gbit/s per zipapp and round, with the load,
and whether `ethtool -k flannel.100` (read in each host's namespace) lists the same features for
every zipapp (a change to how offloads are set must not change them).

python tests/bench/bench_vxlan.py --families AGENT.pyz [rounds] [seconds] [--underlay6]: the same pair
of hosts on a dual-stack network (EnableIPv6; no IPv6 underlay: IPv6 carried inside flannel.100, or
with --underlay6 an IPv6 prefix on the LAN too: IPv6 over flannel-v6.100), iperf3 TCP
one stream container -> container over IPv4 and over IPv6, alternated each round; prints Gbit/s
per family and round, the medians and IPv6/IPv4, with the load (issue 24's goal: IPv6 >= 0.9 x IPv4).
"""

import os
import statistics
import subprocess
import sys
import time

# First: puts .collections and tests/ on sys.path, as pytest.ini does for the tests.
import benchpath  # noqa: F401  pylint: disable=unused-import
from support.netns import Lab


def measure(peers):
    from netaddr import IPAddress, IPNetwork
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel import netlink
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.vxlan import VxlanBackend
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
    from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import Lease, LeaseAttrs

    config = parse_network_config({"Network": "10.64.0.0/10", "Backend": {"Type": "vxlan", "VNI": 1}})
    backend = VxlanBackend(config, netlink.select_interface(), "172.31.250.11")
    backend.setup()
    backend.configure_lease("10.64.0.0/24")

    def lease(number, mac_seed=0):
        public_ip = "172.31.%d.%d" % (251 + number // 250, number % 250 + 1)
        return Lease(IPNetwork("%s/24" % IPAddress(int(IPAddress("10.64.0.0")) + 256 * (number + 1))),
                     LeaseAttrs(public_ip, "vxlan", netlink.deterministic_vtep_mac(public_ip, 1 + mac_seed)))

    leases = [lease(n) for n in range(peers)]
    timings = []
    for one in leases:
        start = time.perf_counter()
        assert len(backend.add_peer(one)) == 3
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    print("add_peer, new peer (%d peers): p50 %.2f ms, p95 %.2f ms, max %.2f ms"
          % (peers, statistics.median(timings), timings[int(len(timings) * 0.95) - 1], timings[-1]))
    for one in leases:
        backend.remove_peer(one.subnet)
    everything = dict((one.subnet, one) for one in leases)
    for label, expected in (("from empty", 3 * peers), ("unchanged", 0)):
        start = time.perf_counter()
        changes = backend.sync(everything)
        print("sync %d peers %s: %.2f ms (%d changes)" % (peers, label, (time.perf_counter() - start) * 1000,
                                                          len(changes)))
        assert len(changes) == expected
    everything[leases[0].subnet] = lease(0, mac_seed=1)
    start = time.perf_counter()
    changes = backend.sync(everything)
    print("sync %d peers, one MAC changed: %.2f ms (%d changes)"
          % (peers, (time.perf_counter() - start) * 1000, len(changes)))
    start = time.perf_counter()
    changes = backend.add_peer(lease(0, mac_seed=2))
    print("add_peer, one MAC changed: %.2f ms (%d changes)" % ((time.perf_counter() - start) * 1000, len(changes)))


def throughput(agent_path, seconds):
    """Gbit/s of one iperf3 TCP stream between containers on two hosts running `agent_path`, and
    the `ethtool -k flannel.100` output of each host."""
    import json

    from support.cluster import Cluster, wait_for
    from support.netns import ping, run_in

    config = '{"Network": "10.0.0.0/8", "SubnetLen": 20, "Backend": {"Type": "vxlan", "VNI": 100}}'
    lab = Lab(lan_prefix="172.31.248")
    try:
        with Cluster(lab, agent_path, config=config, name="bench-vxlan") as cluster:
            hosts = [lab.add_host(), lab.add_host()]
            agents = [cluster.agent(host) for host in hosts]
            subnets = [agent.wait_env() for agent in agents]
            for agent in agents:
                agent.wait_ready()
            one, two = [lab.add_container(host, subnet) for host, subnet in zip(hosts, subnets)]
            wait_for(lambda: ping(one.ns, two.address, count=1), what="overlay up")
            features = [run_in(host.ns, ["ethtool", "-k", "flannel.100"]).stdout for host in hosts]
            server = subprocess.Popen(["ip", "netns", "exec", two.ns, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            report = json.loads(run_in(one.ns, ["iperf3", "-c", two.address, "-t", seconds, "-J"]).stdout)
            server.wait(10)
            return report["end"]["sum_received"]["bits_per_second"] / 1e9, features
    finally:
        lab.cleanup()


def families(agent_path, rounds, seconds, underlay6=False):
    """IPv4 and IPv6 iperf3 throughput between two dual-stack containers, alternated each round;
    with `underlay6`, the hosts' LAN has an IPv6 prefix too (IPv6 over flannel-v6.100)."""
    import json

    from support.cluster import Cluster, wait_for
    from support.netns import ping, run_in

    config = ('{"Network": "10.0.0.0/8", "SubnetLen": 20, "EnableIPv6": true, "IPv6Network": "fd00:10::/48", '
              '"Backend": {"Type": "vxlan", "VNI": 100}}')
    print("vxlan dual-stack, container -> container over two namespace hosts (%s), %s, %d CPUs, load average %.2f"
          % ("IPv6 over flannel-v6.100" if underlay6 else "IPv4 underlay, IPv6 inside flannel.100",
             time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(), os.getloadavg()[0]))
    lab = Lab(lan_prefix="172.31.248")
    results = {"IPv4": [], "IPv6": []}
    try:
        with Cluster(lab, agent_path, config=config, name="bench-vxlan-families") as cluster:
            hosts = [lab.add_host(), lab.add_host()]
            for number, host in enumerate(hosts):
                host.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
                if underlay6:
                    host.run(["ip", "-6", "addr", "add", "fd00:248::%d/64" % (number + 11), "dev", "eth0", "nodad"])
            agents = [cluster.agent(host) for host in hosts]
            for agent in agents:
                agent.wait_ready()
            envs = [agent.env() for agent in agents]
            print("FLANNEL_MTU %s" % envs[0]["FLANNEL_MTU"])
            one, two = [lab.add_container(host, env["FLANNEL_SUBNET"], env["FLANNEL_IPV6_SUBNET"], env["FLANNEL_MTU"])
                        for host, env in zip(hosts, envs)]
            for address in (two.address, two.address6):
                wait_for(lambda: ping(one.ns, address, count=1, timeout=5), timeout=20, what="overlay up to " + address)
            for number in range(rounds):
                for family, address in (("IPv4", two.address), ("IPv6", two.address6)):
                    server = subprocess.Popen(["ip", "netns", "exec", two.ns, "iperf3", "-s", "-1"],
                                              stdout=subprocess.DEVNULL)
                    time.sleep(0.5)
                    report = json.loads(run_in(one.ns, ["iperf3", "-c", address, "-t", seconds, "-J"]).stdout)
                    server.wait(10)
                    results[family].append(report["end"]["sum_received"]["bits_per_second"] / 1e9)
                    print("round %d %s: %.2f Gbit/s (load average %.2f)"
                          % (number + 1, family, results[family][-1], os.getloadavg()[0]))
    finally:
        lab.cleanup()
    medians = dict((family, statistics.median(values)) for family, values in results.items())
    for family, values in results.items():
        print("%s: %s Gbit/s (median %.2f)" % (family, " ".join("%.2f" % value for value in values), medians[family]))
    print("IPv6 / IPv4 (medians): %.2f" % (medians["IPv6"] / medians["IPv4"]))


def compare_throughput(agent_paths, rounds, seconds):
    print("vxlan, container -> container over two namespace hosts, %s, %d CPUs, load average %.2f"
          % (time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(), os.getloadavg()[0]))
    results = dict((path, []) for path in agent_paths)
    features_seen = {}
    for number in range(rounds):
        for path in agent_paths:
            gbits, features = throughput(path, seconds)
            results[path].append(gbits)
            features_seen.setdefault("\n".join(features), []).append(path)
            print("round %d %s: %.2f Gbit/s (load average %.2f)"
                  % (number + 1, path, results[path][-1], os.getloadavg()[0]))
    for path, values in results.items():
        print("%s: %s Gbit/s (median %.2f)" % (path, " ".join("%.2f" % value for value in values),
                                               statistics.median(values)))
    if len(features_seen) == 1:
        features = next(iter(features_seen)).splitlines()
        print("ethtool -k flannel.100: the same features on every host, every zipapp, every round (%d lines), "
              "among them:\n%s" % (len(features) // 2, "\n".join(sorted(set(
                  line for line in features if line.strip().startswith("tx-checksum"))))))
    else:
        for features, paths in features_seen.items():
            print("ethtool -k flannel.100 for %s:\n%s" % (", ".join(sorted(set(paths))), features))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--throughput":
        compare_throughput(sys.argv[2].split(","), int(sys.argv[3]) if len(sys.argv) > 3 else 2,
                           int(sys.argv[4]) if len(sys.argv) > 4 else 10)
        sys.exit(0)
    if len(sys.argv) > 2 and sys.argv[1] == "--families":
        families(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 3, sys.argv[4] if len(sys.argv) > 4 else "5",
                 "--underlay6" in sys.argv)
        sys.exit(0)
    if len(sys.argv) > 2 and sys.argv[1] == "--inside":
        if os.environ.get("BENCH_PROFILE"):
            import cProfile
            cProfile.run("measure(int(sys.argv[2]))", sort="cumulative")
        else:
            measure(int(sys.argv[2]))
        sys.exit(0)
    lab = Lab()
    try:
        host = lab.add_host()
        subprocess.check_call(["ip", "netns", "exec", host.ns, sys.executable, os.path.abspath(__file__),
                               "--inside", sys.argv[1] if len(sys.argv) > 1 else "100"])
    finally:
        lab.cleanup()
