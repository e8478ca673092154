"""Measure VxlanBackend per-peer programming time inside a throw-away namespace.

Run as root: python tests/bench/bench_vxlan.py [peers]. Prints p50/p95 of add_peer() for new
peers and the time of full syncs (from empty, unchanged, one peer changed) for `peers` peers.
The backend runs with a plain IPRoute inside the namespace (`ip netns exec`), as the agent does.
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


if __name__ == "__main__":
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
