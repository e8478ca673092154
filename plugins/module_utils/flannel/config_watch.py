"""Following <prefix>/config while the agent runs (flanneld v0.10 reads it at start only).

A valid new config is handed to the config follower (config_switching.py), which moves the host
to it without a restart; an invalid one (or a deleted key), or one whose Network covers the hosts'
own addresses, is refused with the key and the rule, in the log and on /healthz, and the host runs
on with the config in force. Parsed in the agent's mode (unknown keys warned about, not refused),
as at start-up.
"""

from .config import ConfigError, check_underlay_addresses, parse_network_config

NETWORK_KEYS = ("Network", "SubnetLen", "SubnetMin", "SubnetMax")


def config_changes(old, new):
    """The keys whose effective values differ, in flannel's spelling (['Backend.Type'] when the
    backend changed, else the Backend options that did, then the Network keys)."""
    before, after = old.as_dict(), new.as_dict()
    old_backend, new_backend = before["Backend"], after["Backend"]
    if old_backend["Type"] != new_backend["Type"]:
        changed = ["Backend.Type"]
    else:
        changed = ["Backend." + key for key in sorted(set(old_backend) | set(new_backend))
                   if old_backend.get(key) != new_backend.get(key)]
    return changed + [key for key in NETWORK_KEYS if before[key] != after[key]]


def moves_lease(new, subnet, ipv6_subnet=None):
    """Whether the lease on `subnet` (and `ipv6_subnet`, a dual-stack lease's) must be given up
    under the `new` config: its IPv4 subnet does not fit, or it must be re-keyed because IPv6 was
    turned on or off or its IPv6 subnet does not fit."""
    if not (new.is_compatible(subnet) and subnet in new.network):
        return True
    if new.ipv6 is None or ipv6_subnet is None:
        return (new.ipv6 is None) != (ipv6_subnet is None)
    return not new.ipv6.is_compatible(ipv6_subnet)


class ConfigWatch:
    """What the agent knows about the stored config beyond the one in force: `refusal` says why
    the stored one is not in force (None when it is)."""

    def __init__(self, config_key, log):
        self.config_key = config_key
        self.log = log
        self.refusal = None
        self._last_text = None

    def started_with(self, text):
        """The text the agent started on (read once at start-up)."""
        self._last_text = text
        self.refusal = None

    def forget(self):
        """Examine the next text even when it is the one seen last (SIGHUP: a config whose
        backend could not start is tried again)."""
        self._last_text = object()

    def examine(self, text, in_force, underlay=None):
        """The stored config `text` (None: the key is gone) against the config in force. Returns
        the NetworkConfig to move to, or None when there is nothing to do (the same text, the same
        effective config, or a refused one: see `refusal`). `underlay()`, when given, lists the
        (address, whose) pairs of the hosts' own addresses the new Network must not contain."""
        if text == self._last_text:
            return None
        self._last_text = text
        if text is None:
            return self.refuse("%s was deleted" % self.config_key, in_force)
        try:
            config = parse_network_config(text, strict=False)
            if underlay is not None:
                check_underlay_addresses(config, underlay())
        except ConfigError as err:
            return self.refuse("network config at %s refused: %s" % (self.config_key, err), in_force)
        for warning in config.warnings:
            self.log.warning("network config at %s: %s", self.config_key, warning)
        if self.refusal is not None:
            self.log.info("network config at %s is valid again", self.config_key)
        self.refusal = None
        if config == in_force:
            self.log.info("network config at %s rewritten with the same effective config %s",
                          self.config_key, in_force.digest())
            return None
        self.log.info("network config at %s changed (%s): %s", self.config_key,
                      ", ".join(config_changes(in_force, config)), config)
        return config

    def refuse(self, reason, in_force):
        """Say (log, and `refusal` for /healthz) why the stored config is not in force."""
        self.refusal = "%s; running on the last good config %s" % (reason, in_force.digest())
        self.log.error("%s", self.refusal)
        return None
