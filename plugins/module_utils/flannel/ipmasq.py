"""flanneld's --ip-masq NAT rules. iptables has no netlink API, so this runs the iptables
command (with -w, so a concurrent Docker or kube-proxy holding the xtables lock makes us wait
instead of fail).

flanneld v0.9.1+ also appends FORWARD ACCEPT rules for the network (Docker >= 1.13 sets the FORWARD
policy to DROP); this agent leaves FORWARD to the role netlab.flannel.forward, which keeps its
policy or rules across Docker restarts and removes them on teardown.

Rules are checked with -C. When any of a set is missing they are all deleted and appended again
in order, as flanneld does: the order of the masquerade rules matters. The first check of a
process, and any re-append, also deletes the same four rules without the comment: upstream
flanneld v0.10's, which it leaves when it stops (a host switched from it to this agent), so that
one agent's set remains.
`prefix` is an argv prefix for every command, e.g. ("ip", "netns", "exec", "ns1") in tests.
"""

import subprocess

from .changes import MASQUERADE, Change

MASQ_COMMENT = "flanneld masq"
MULTICAST = "224.0.0.0/4"
MULTICAST_IPV6 = "ff00::/8"


# (prefix, iptables, network, subnet) whose uncommented copies this process has looked for.
_UPSTREAM_CHECKED = set()


class IptablesError(Exception):
    """iptables failed for another reason than a missing rule."""


def masquerade_rules(network, own_subnet, comment=True):
    """flanneld's four nat POSTROUTING rules, in order, as argument lists (without the comment:
    upstream v0.10's). The same four for ip6tables with an IPv6 network and subnet (modern
    flanneld's -ip-masq on a dual-stack network), multicast being ff00::/8 there."""
    network, own_subnet = str(network), str(own_subnet)
    multicast = MULTICAST_IPV6 if ":" in network else MULTICAST
    comment = ["-m", "comment", "--comment", MASQ_COMMENT] if comment else []
    return [
        ["-s", network, "-d", network] + comment + ["-j", "RETURN"],  # inside the overlay: keep sources
        ["-s", network, "!", "-d", multicast] + comment + ["-j", "MASQUERADE"],  # overlay to the world
        ["!", "-s", network, "-d", own_subnet] + comment + ["-j", "RETURN"],  # the world to our containers
        ["!", "-s", network, "-d", network] + comment + ["-j", "MASQUERADE"],  # host to remote containers
    ]


def ensure_masquerade(network, own_subnet, prefix=(), iptables="iptables"):
    """Make nat POSTROUTING hold the four masquerade rules in order; returns the changes made."""
    changes = _ensure(prefix, iptables, "nat", "POSTROUTING", masquerade_rules(network, own_subnet))
    key = (tuple(prefix), iptables, str(network), str(own_subnet))
    if changes or key not in _UPSTREAM_CHECKED:
        _UPSTREAM_CHECKED.add(key)
        changes.extend(_remove(prefix, iptables, "nat", "POSTROUTING",
                               masquerade_rules(network, own_subnet, comment=False)))
    return changes


def remove_masquerade(network, own_subnet, prefix=(), iptables="iptables"):
    """Delete the four masquerade rules where present; returns the changes made."""
    return _remove(prefix, iptables, "nat", "POSTROUTING", masquerade_rules(network, own_subnet))


def _run(prefix, iptables, table, action, chain, rule):
    argv = list(prefix) + [iptables, "-w", "-t", table, action, chain] + rule
    try:
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, check=False)
    except OSError as error:
        raise IptablesError("cannot run %s: %s" % (iptables, error))


def _exists(prefix, iptables, table, chain, rule):
    result = _run(prefix, iptables, table, "-C", chain, rule)
    if result.returncode == 0:
        return True
    if result.returncode == 1:  # "Bad rule (does a matching rule exist in that chain?)"
        return False
    raise IptablesError("%s -t %s -C %s %s: %s"
                        % (iptables, table, chain, " ".join(rule), result.stderr.strip()))


def _change(prefix, iptables, table, action, chain, rule):
    result = _run(prefix, iptables, table, action, chain, rule)
    if result.returncode != 0:
        raise IptablesError("%s -t %s %s %s %s: %s"
                            % (iptables, table, action, chain, " ".join(rule), result.stderr.strip()))
    return Change(MASQUERADE, "added" if action == "-A" else "deleted", "-t %s %s %s" % (table, chain, _quoted(rule)))


def _ensure(prefix, iptables, table, chain, rules):
    present = [_exists(prefix, iptables, table, chain, rule) for rule in rules]
    if all(present):
        return []
    changes = [_change(prefix, iptables, table, "-D", chain, rule)
               for rule, there in zip(rules, present) if there]
    changes.extend(_change(prefix, iptables, table, "-A", chain, rule) for rule in rules)
    return changes


def _remove(prefix, iptables, table, chain, rules):
    return [_change(prefix, iptables, table, "-D", chain, rule)
            for rule in rules if _exists(prefix, iptables, table, chain, rule)]


def _quoted(rule):
    return " ".join('"%s"' % word if " " in word else word for word in rule)
