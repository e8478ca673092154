"""Mid-way through a rolling change of Backend.Type: a vxlan host and a host-gw host on one LAN
reach each other by direct routes, and a peer that moves is re-programmed (real kernels, hand-made
leases). An off-link peer of the other backend is skipped, saying why."""

import logging

from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel import netlink
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.host_gw import HostGwBackend
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.vxlan import VxlanBackend
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import Lease, LeaseAttrs
from support.netns import ping

NETWORK = {"Network": "10.6.0.0/16", "SubnetLen": 24}
VXLAN = parse_network_config(dict(NETWORK, Backend={"Type": "vxlan", "VNI": 7}))
HOST_GW = parse_network_config(dict(NETWORK, Backend={"Type": "host-gw"}))
SUBNETS = ["10.6.1.0/24", "10.6.2.0/24"]


def _started(host, backend_class, config, subnet):
    ipr = host.ipr()
    backend = backend_class(config, netlink.select_interface(ipr=ipr), host.address, ipr=ipr)
    backend.setup()
    backend.configure_lease(subnet)
    return backend


def _lease(subnet, host, backend):
    mac = backend.vtep_mac if isinstance(backend, VxlanBackend) else None
    return Lease(IPNetwork(subnet), LeaseAttrs(host.address, backend.backend_type, mac))


def test_vxlan_and_host_gw_hosts_reach_each_other_and_a_moved_peer_is_reprogrammed(lab, three_hosts):
    first, second = three_hosts[:2]
    vxlan = _started(first, VxlanBackend, VXLAN, SUBNETS[0])
    host_gw = _started(second, HostGwBackend, HOST_GW, SUBNETS[1])
    assert vxlan.sync({SUBNETS[1]: _lease(SUBNETS[1], second, host_gw)}) == \
        ["added route 10.6.2.0/24 via 172.31.250.12 dev eth0"]
    assert host_gw.sync({SUBNETS[0]: _lease(SUBNETS[0], first, vxlan)}) == \
        ["added route 10.6.1.0/24 via 172.31.250.11 dev eth0"]
    containers = [lab.add_container(first, SUBNETS[0]), lab.add_container(second, SUBNETS[1])]
    assert ping(containers[0].ns, containers[1].address, count=2, timeout=1.5)
    assert ping(containers[1].ns, containers[0].address, count=1, timeout=1.5)

    # The host-gw host moves to vxlan: its peer replaces the direct route by VXLAN entries.
    moved = _started(second, VxlanBackend, VXLAN, SUBNETS[1])
    moved.sync({SUBNETS[0]: _lease(SUBNETS[0], first, vxlan)})
    host_gw.teardown(moved)
    changes = vxlan.add_peer(_lease(SUBNETS[1], second, moved))
    assert changes == ["updated neighbour 10.6.2.0 lladdr %s" % moved.vtep_mac,
                       "updated fdb %s dst 172.31.250.12" % moved.vtep_mac,
                       "updated route 10.6.2.0/24 via 10.6.2.0 dev flannel.7 onlink"]
    assert "10.6.2.0/24" not in first.run(["ip", "route", "show", "dev", "eth0"]).stdout
    assert "10.6.1.0/24 via 10.6.1.0 dev flannel.7 proto static onlink" in second.run(["ip", "route"]).stdout
    assert ping(containers[0].ns, containers[1].address, count=2, timeout=1.5)


def test_off_link_peer_of_the_other_backend_is_skipped_with_a_reason(three_hosts, caplog):
    vxlan = _started(three_hosts[0], VxlanBackend, VXLAN, SUBNETS[0])
    far = Lease(IPNetwork("10.6.9.0/24"), LeaseAttrs("198.51.100.9", "host-gw"))
    with caplog.at_level(logging.WARNING):
        assert vxlan.sync({"10.6.9.0/24": far}) == []
    assert ("ignoring lease 10.6.9.0/24: backend host-gw, and its PublicIP 198.51.100.9 is not on-link on eth0"
            in caplog.text)
