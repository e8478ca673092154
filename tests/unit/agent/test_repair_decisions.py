"""kernel_repairs.needed: which announced kernel changes undo what the agent owns (pure logic;
the namespace tests in tests/agent/test_kernel_repairs.py run it on real notifications)."""

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.kernel_repairs import Owned, needed
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.netlink import Route
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.netlink.events import (
    AddressEvent, FdbEvent, LinkEvent, NeighbourEvent, Overflow, RouteEvent)

DEVICE, UNDERLAY = 7, 2
MAC, OTHER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
ROUTE = Route("10.13.0.0/20", "10.13.0.0", DEVICE, True)
OWNED = Owned(DEVICE, "flannel.100", 1450, "02:aa:00:00:00:01", "10.12.0.0", frozenset(),
              {ROUTE.dst: ROUTE}, {"10.13.0.0": MAC}, {MAC: "172.31.250.12"}, UNDERLAY, 1500)


def test_a_removed_route_neighbour_and_fdb_entry_are_restored():
    repairs = needed([RouteEvent(True, ROUTE, 0), NeighbourEvent(True, DEVICE, "10.13.0.0", MAC, True),
                      FdbEvent(True, DEVICE, MAC, "172.31.250.12")], OWNED)
    assert (repairs.routes, repairs.neighbours, repairs.fdb) == ([ROUTE], [("10.13.0.0", MAC)], [(MAC, "172.31.250.12")])
    assert not (repairs.full or repairs.device or repairs.underlay_mtu)


def test_changed_entries_are_restored():
    moved = ROUTE._replace(gateway="172.31.250.99", index=UNDERLAY, onlink=False)
    repairs = needed([RouteEvent(False, moved, 0), NeighbourEvent(False, DEVICE, "10.13.0.0", OTHER_MAC, True),
                      FdbEvent(False, DEVICE, MAC, "172.31.250.99")], OWNED)
    assert (repairs.routes, repairs.neighbours, repairs.fdb) == ([ROUTE], [("10.13.0.0", MAC)], [(MAC, "172.31.250.12")])
    stale = needed([NeighbourEvent(False, DEVICE, "10.13.0.0", MAC, False)], OWNED)  # no longer permanent
    assert stale.neighbours == [("10.13.0.0", MAC)]


def test_the_agents_own_writes_and_removals_of_what_it_no_longer_owns_need_nothing():
    assert needed([RouteEvent(False, ROUTE, 0), NeighbourEvent(False, DEVICE, "10.13.0.0", MAC, True),
                   FdbEvent(False, DEVICE, MAC, "172.31.250.12")], OWNED) is None
    gone = Route("10.14.0.0/20", "10.14.0.0", DEVICE, True)
    assert needed([RouteEvent(True, gone, 0), NeighbourEvent(True, DEVICE, "10.14.0.0", OTHER_MAC, True),
                   FdbEvent(True, DEVICE, OTHER_MAC, "172.31.250.14"), FdbEvent(True, DEVICE, MAC, "172.31.250.99"),
                   RouteEvent(True, ROUTE, 100)], OWNED) is None
    # Removed, then written again (the agent re-adding it): the last word counts.
    assert needed([RouteEvent(True, ROUTE, 0), RouteEvent(False, ROUTE, 0)], OWNED) is None
    # Entries on other links are someone else's.
    assert needed([NeighbourEvent(True, 99, "10.13.0.0", MAC, True), FdbEvent(True, 99, MAC, "172.31.250.12")],
                  OWNED) is None


def test_the_device_deleted_renamed_down_or_stripped_needs_the_device_repaired():
    link = LinkEvent(False, DEVICE, "flannel.100", 1450, True, "02:aa:00:00:00:01")
    assert needed([link], OWNED) is None
    for event in (link._replace(removed=True), link._replace(up=False), link._replace(mtu=1400),
                  link._replace(mac=MAC), link._replace(name="renamed"), link._replace(index=42),
                  AddressEvent(True, DEVICE, "10.12.0.0", 32)):
        assert needed([event], OWNED).device, event
    assert needed([AddressEvent(True, DEVICE, "10.99.0.0", 32)], OWNED) is None


def test_the_underlay_mtu_and_addresses_are_followed_and_lost_events_mean_a_full_sync():
    link = LinkEvent(False, UNDERLAY, "eth0", 1500, True, "02:bb:00:00:00:01")
    assert needed([link], OWNED) is None
    assert needed([link._replace(mtu=9000), link._replace(mtu=1400)], OWNED).underlay_mtu == 1400
    assert needed([AddressEvent(False, UNDERLAY, "172.31.250.50", 24)], OWNED).underlay_addresses
    assert needed([Overflow()], OWNED).full


def test_udp_network_route_lost_needs_the_device_repaired():
    owned = OWNED._replace(device_routes=frozenset(["10.0.0.0/8"]), routes={}, neighbours={}, fdb={})
    assert needed([RouteEvent(True, Route("10.0.0.0/8", None, DEVICE, False), 0)], owned).device
    assert needed([RouteEvent(True, Route("10.0.0.0/8", None, UNDERLAY, False), 0)], owned) is None


DEVICE6 = 8
ROUTE6 = Route("fd00:10:0:13::/64", "fd00:10:0:13::", DEVICE6, True)
INSIDE6 = Route("fd00:10:0:14::/64", "fd00:10:0:14::", DEVICE, True)
MAC6 = "02:00:00:00:00:06"
DUAL = OWNED._replace(routes={ROUTE.dst: ROUTE, ROUTE6.dst: ROUTE6, INSIDE6.dst: INSIDE6},
                      neighbours={"10.13.0.0": MAC, "fd00:10:0:13::": MAC6, "fd00:10:0:14::": MAC},
                      fdb={MAC: "172.31.250.12", MAC6: "fd00:205::12"}, device_address6="fd00:10:0:12::",
                      device6_index=DEVICE6, device6_name="flannel-v6.100")


def test_ipv6_entries_on_either_device_are_restored_at_the_kernels_ipv6_metric():
    repairs = needed([RouteEvent(True, ROUTE6, 1024), RouteEvent(True, INSIDE6, 1024),
                      NeighbourEvent(True, DEVICE6, "fd00:10:0:13::", MAC6, True),
                      NeighbourEvent(False, DEVICE, "fd00:10:0:14::", OTHER_MAC, True),
                      FdbEvent(True, DEVICE6, MAC6, "fd00:205::12")], DUAL)
    assert (repairs.routes, repairs.neighbours, repairs.fdb) == (
        [ROUTE6, INSIDE6], [("fd00:10:0:13::", MAC6), ("fd00:10:0:14::", MAC)], [(MAC6, "fd00:205::12")])
    # The agent's own IPv6 writes, and an IPv6 route of another metric (someone else's), need nothing.
    assert needed([RouteEvent(False, ROUTE6, 1024), RouteEvent(True, ROUTE6, 0),
                   NeighbourEvent(False, DEVICE6, "fd00:10:0:13::", MAC6, True)], DUAL) is None


def test_flannel_v6_or_the_devices_ipv6_address_lost_needs_the_device_repaired():
    link6 = LinkEvent(False, DEVICE6, "flannel-v6.100", 1430, True, MAC6)
    assert needed([link6], DUAL) is None
    for event in (link6._replace(removed=True), link6._replace(up=False), link6._replace(name="renamed"),
                  link6._replace(index=43), AddressEvent(True, DEVICE6, "fd00:10:0:12::", 128),
                  AddressEvent(True, DEVICE, "fd00:10:0:12::", 128)):
        assert needed([event], DUAL).device, event
    # An IPv6 address coming or going on the underlay is not a move of the IPv4 address in use.
    assert needed([AddressEvent(False, UNDERLAY, "fd00:205::50", 64)], DUAL) is None
