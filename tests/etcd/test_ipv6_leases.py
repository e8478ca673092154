"""Dual-stack leases (issue 24) on a real etcd, v2 and v3: allocated like IPv4 ones (free search,
previous subnet, TTL, renewal, never a taken subnet), re-keyed when IPv6 is turned on or off with
the IPv4 subnet kept, and one IPv4 subnet named by two keys resolved the same way everywhere."""

import random

import pytest
from netaddr import IPNetwork

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.config import parse_network_config
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.lease import (
    LeaseAttrs, OutOfSubnets, acquire_lease)

PREFIX = "/coreos.com/network"
IPV4 = {"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0", "SubnetMax": "10.99.0.0",
        "Backend": {"Type": "vxlan", "VNI": 100}}
CONFIG_V4 = parse_network_config(IPV4)
DUAL = parse_network_config(dict(IPV4, EnableIPv6=True, IPv6Network="fd00:10::/48"))


def _attrs(last_octet, dual=True):
    return LeaseAttrs("192.168.205.%d" % last_octet, "vxlan", "0e:00:00:00:00:%02x" % last_octet,
                      modern_format=dual, vni=100 if dual else None)


def _keys(registry):
    return sorted(lease.key for lease in registry.list_leases().leases)


def test_dual_stack_leases_are_distinct_and_stored_as_modern_flanneld(registry, raw):
    leases = [acquire_lease(registry, DUAL, _attrs(n)) for n in range(10, 20)]
    assert len(set(lease.subnet for lease in leases)) == len(set(lease.ipv6_subnet for lease in leases)) == 10
    for number, lease in zip(range(10, 20), leases):
        assert DUAL.is_compatible(lease.subnet) and DUAL.ipv6.is_compatible(lease.ipv6_subnet)
        node = raw.read("%s/subnets/%s-20&%s-64" % (PREFIX, lease.subnet.ip, lease.ipv6_subnet.ip))
        assert node.value == ('{"PublicIP":"192.168.205.%d","PublicIPv6":null,"BackendType":"vxlan",'
                              '"BackendData":{"VNI":100,"VtepMAC":"0e:00:00:00:00:%02x"}}' % (number, number))
        assert 86390 < node.ttl <= 86400


def test_renewal_and_restart_keep_both_subnets(registry):
    first = acquire_lease(registry, DUAL, _attrs(10))
    renewed = registry.update_lease(first, first.attrs, 3600)
    assert (renewed.key, renewed.ipv6_subnet) == (first.key, first.ipv6_subnet)
    again = acquire_lease(registry, DUAL, _attrs(10), previous_subnet=IPNetwork("10.50.0.0/20"),
                          previous_ipv6_subnet=IPNetwork("fd00:10:0:99::/64"))
    assert again.key == first.key and _keys(registry) == [first.key]
    assert registry.delete_lease(again) and _keys(registry) == []


def test_previous_subnets_taken_when_free_and_never_stolen(registry):
    wanted = (IPNetwork("10.42.0.0/20"), IPNetwork("fd00:10:0:42::/64"))
    lease = acquire_lease(registry, DUAL, _attrs(10), previous_subnet=wanted[0], previous_ipv6_subnet=wanted[1])
    assert (lease.subnet, lease.ipv6_subnet) == wanted
    other = acquire_lease(registry, DUAL, _attrs(11), previous_subnet=wanted[0], previous_ipv6_subnet=wanted[1])
    assert other.subnet != wanted[0] and other.ipv6_subnet != wanted[1]


def test_ipv6_subnets_of_unreadable_keys_are_never_handed_out(registry, raw):
    config = parse_network_config(dict(IPV4, EnableIPv6=True, IPv6Network="fd00:10::/48",
                                       IPv6SubnetMin="fd00:10:0:1::", IPv6SubnetMax="fd00:10:0:2::"))
    raw.write("%s/subnets/10.20.0.0-20&fd00:10:0:1::-64" % PREFIX, "not a lease")
    lease = acquire_lease(registry, config, _attrs(10), previous_ipv6_subnet=IPNetwork("fd00:10:0:1::/64"),
                          rng=random.Random(1))
    assert lease.ipv6_subnet == IPNetwork("fd00:10:0:2::/64") and lease.subnet != IPNetwork("10.20.0.0/20")
    with pytest.raises(OutOfSubnets) as caught:
        acquire_lease(registry, config, _attrs(11))
    assert str(caught.value) == ("no free subnet: every /64 between fd00:10:0:1:: and fd00:10:0:2:: has a key; "
                                 "1 keys in range hold no valid lease (delete them to free their subnets)")


def test_ipv4_key_of_this_host_is_re_keyed_dual_stack_keeping_its_subnet_and_back(registry):
    plain = acquire_lease(registry, CONFIG_V4, _attrs(10, dual=False))
    assert _keys(registry) == ["%s-20" % plain.subnet.ip]
    dual = acquire_lease(registry, DUAL, _attrs(10))
    assert dual.subnet == plain.subnet and dual.ipv6_subnet is not None
    assert _keys(registry) == [dual.key] and "&" in dual.key
    back = acquire_lease(registry, CONFIG_V4, _attrs(10, dual=False))
    assert back.subnet == plain.subnet and _keys(registry) == ["%s-20" % plain.subnet.ip]


def test_a_reservation_stays_a_reservation_when_re_keyed(registry, raw):
    raw.write("%s/subnets/10.30.0.0-20" % PREFIX, _attrs(10, dual=False).to_json())
    dual = acquire_lease(registry, DUAL, _attrs(10))
    assert dual.subnet == IPNetwork("10.30.0.0/20") and dual.is_reservation


def test_two_keys_for_one_ipv4_subnet_the_first_host_holds_it(registry, raw):
    """Another host's key beside a held subnet never takes it over (and never gets a lease)."""
    held = acquire_lease(registry, DUAL, _attrs(10))
    intruder = "%s/subnets/%s-20" % (PREFIX, held.subnet.ip)
    raw.write(intruder, _attrs(11, dual=False).to_json())
    listing = registry.list_leases()
    assert [lease.key for lease in listing.leases] == [held.key]
    assert listing.skipped == [(intruder, "subnet %s is also leased at %s, which holds it" % (held.subnet, held.key))]
    other = acquire_lease(registry, DUAL, _attrs(11))
    assert other.subnet != held.subnet


def test_two_keys_of_one_host_the_last_written_holds_it(registry, raw):
    """A host switched from a dual-stack agent to upstream v0.10 writes its plain key beside its
    dual-stack one (v0.10 reads the dual-stack key as its own lease, then sets v0.10's key)."""
    dual = acquire_lease(registry, DUAL, _attrs(10))
    plain = "%s/subnets/%s-20" % (PREFIX, dual.subnet.ip)
    raw.write(plain, _attrs(10, dual=False).to_json())
    assert [(lease.key, lease.ipv6_subnet) for lease in registry.list_leases().leases] == [
        ("%s-20" % dual.subnet.ip, None)]


def test_two_keys_for_one_ipv6_subnet_the_first_holds_it_and_the_later_host_acquires_again(registry, raw):
    """As two hosts acquiring at once can leave them (a create stops only a create at the same
    key): the later key is outheld everywhere, and its host deletes it, keeps its IPv4 subnet and
    takes another IPv6 subnet."""
    held = acquire_lease(registry, DUAL, _attrs(10))
    late = "%s/subnets/10.77.0.0-20&%s-64" % (PREFIX, held.ipv6_subnet.ip)
    raw.write(late, _attrs(11).to_json(), ttl=600)
    listing = registry.list_leases()
    assert [lease.key for lease in listing.leases] == [held.key]
    why = "IPv6 subnet %s is also leased at %s, which holds it" % (held.ipv6_subnet, held.key)
    assert listing.skipped == [(late, why)]
    assert [(lease.subnet, reason) for lease, reason in listing.outheld] == [(IPNetwork("10.77.0.0/20"), why)]
    said = []
    again = acquire_lease(registry, DUAL, _attrs(11), log=said.append)
    assert again.subnet == IPNetwork("10.77.0.0/20") and again.ipv6_subnet != held.ipv6_subnet, said
    assert _keys(registry) == sorted([held.key, again.key])
    assert said[0] == "lease 10.77.0.0-20&%s-64 for current IP is not held: %s; deleting it" % (
        held.ipv6_subnet.ip, why)
