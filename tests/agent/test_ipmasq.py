"""flanneld's iptables rules, applied inside a host namespace (never in the root namespace)."""

import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel import ipmasq
from support.netns import ping

NETWORK, OWN_SUBNET = "10.7.0.0/16", "10.7.1.0/24"
MASQ_RULES = [
    '-A POSTROUTING -s 10.7.0.0/16 -d 10.7.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
    '-A POSTROUTING -s 10.7.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE',
    '-A POSTROUTING ! -s 10.7.0.0/16 -d 10.7.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
    '-A POSTROUTING ! -s 10.7.0.0/16 -d 10.7.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE',
]


@pytest.fixture
def host(lab):
    return lab.add_host()


def prefix(host):
    return ("ip", "netns", "exec", host.ns)


def listed(host, table, chain):
    lines = host.run(["iptables", "-w", "-t", table, "-S", chain]).stdout.splitlines()
    return [line for line in lines if line.startswith("-A ")]


def test_masquerade_rules_in_order_and_idempotent(host):
    changes = ipmasq.ensure_masquerade(NETWORK, OWN_SUBNET, prefix=prefix(host))
    assert changes == ["added -t nat POSTROUTING " + rule.split(" ", 2)[2] for rule in MASQ_RULES]
    assert listed(host, "nat", "POSTROUTING") == MASQ_RULES
    assert ipmasq.ensure_masquerade(NETWORK, OWN_SUBNET, prefix=prefix(host)) == []


def test_missing_rule_reappends_all_in_order(host):
    ipmasq.ensure_masquerade(NETWORK, OWN_SUBNET, prefix=prefix(host))
    host.run(["iptables", "-w", "-t", "nat", "-D"] + MASQ_RULES[1].split()[1:4] +
             ["!", "-d", "224.0.0.0/4", "-m", "comment", "--comment", "flanneld masq", "-j", "MASQUERADE"])
    host.run(["iptables", "-w", "-t", "nat", "-I", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "RETURN"])
    changes = ipmasq.ensure_masquerade(NETWORK, OWN_SUBNET, prefix=prefix(host))
    assert len([c for c in changes if c.startswith("deleted")]) == 3
    assert len([c for c in changes if c.startswith("added")]) == 4
    assert listed(host, "nat", "POSTROUTING") == ["-A POSTROUTING -s 192.0.2.0/24 -j RETURN"] + MASQ_RULES


def test_remove_masquerade_deletes_only_ours(host):
    ipmasq.ensure_masquerade(NETWORK, OWN_SUBNET, prefix=prefix(host))
    host.run(["iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "RETURN"])
    assert len(ipmasq.remove_masquerade(NETWORK, OWN_SUBNET, prefix=prefix(host))) == 4
    assert listed(host, "nat", "POSTROUTING") == ["-A POSTROUTING -s 192.0.2.0/24 -j RETURN"]
    assert ipmasq.remove_masquerade(NETWORK, OWN_SUBNET, prefix=prefix(host)) == []


def test_upstream_rules_left_behind_are_replaced_by_ours(host):
    """Upstream flanneld v0.10 appends the same four rules without a comment and leaves them when
    it stops: the first ensure after it keeps one set, ours."""
    for rule in ipmasq.masquerade_rules(NETWORK, OWN_SUBNET, comment=False):
        host.run(["iptables", "-w", "-t", "nat", "-A", "POSTROUTING"] + rule)
    changes = ipmasq.ensure_masquerade(NETWORK, OWN_SUBNET, prefix=prefix(host))
    assert len([c for c in changes if c.startswith("deleted")]) == 4
    assert listed(host, "nat", "POSTROUTING") == MASQ_RULES
    assert ipmasq.ensure_masquerade(NETWORK, OWN_SUBNET, prefix=prefix(host)) == []
    # Ours already in place when the agent starts again after upstream: the first check still
    # finds upstream's (a new process: the memo of the checks made is emptied).
    ipmasq._UPSTREAM_CHECKED.clear()
    for rule in ipmasq.masquerade_rules(NETWORK, OWN_SUBNET, comment=False):
        host.run(["iptables", "-w", "-t", "nat", "-A", "POSTROUTING"] + rule)
    assert len(ipmasq.ensure_masquerade(NETWORK, OWN_SUBNET, prefix=prefix(host))) == 4
    assert listed(host, "nat", "POSTROUTING") == MASQ_RULES


def test_masquerade_lets_a_container_reach_a_host_without_overlay_routes(lab, host):
    other = lab.add_host()
    container = lab.add_container(host, OWN_SUBNET)
    # `other` has no route back to 10.7.1.0/24: only a masqueraded source gets an answer.
    assert ping(container.ns, other.address, timeout=1) == []
    ipmasq.ensure_masquerade(NETWORK, OWN_SUBNET, prefix=prefix(host))
    assert ping(container.ns, other.address, timeout=1) == [63]


def test_iptables_failure_is_reported(host):
    with pytest.raises(ipmasq.IptablesError):
        ipmasq.ensure_masquerade("10.7.0.0/99", OWN_SUBNET, prefix=prefix(host))


def test_ipv6_rules_with_ip6tables_added_and_removed(host):
    """A dual-stack network's rules: the same four for ip6tables, multicast being ff00::/8."""
    network6, subnet6 = "fd00:10::/48", "fd00:10:0:7::/64"
    changes = ipmasq.ensure_masquerade(network6, subnet6, prefix=prefix(host), iptables="ip6tables")
    assert len(changes) == 4 and all(change.startswith("added") for change in changes)
    rules = [line for line in host.run(["ip6tables", "-w", "-t", "nat", "-S", "POSTROUTING"]).stdout.splitlines()
             if line.startswith("-A ")]
    assert rules == [rule.replace(NETWORK, network6).replace(OWN_SUBNET, subnet6).replace("224.0.0.0/4", "ff00::/8")
                     for rule in MASQ_RULES]
    assert listed(host, "nat", "POSTROUTING") == []  # iptables' own table untouched
    assert ipmasq.ensure_masquerade(network6, subnet6, prefix=prefix(host), iptables="ip6tables") == []
    assert len(ipmasq.remove_masquerade(network6, subnet6, prefix=prefix(host), iptables="ip6tables")) == 4
    assert host.run(["ip6tables", "-w", "-t", "nat", "-S", "POSTROUTING"]).stdout.splitlines() == ["-P POSTROUTING ACCEPT"]
