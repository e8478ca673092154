"""The network config in force and the ConfigFollower, a part of the Agent (daemon.py): the
config is fetched at start-up (retried until valid), examined again when it changes, and a new
valid one (config_watch.py decides) put in force without a restart (flanneld v0.10 reads the
config at start only).

`InForce` is what runs here: the interface, the config and the backend started for it. The
follower alone writes it; the lease keeper and the peer table read it. A switch moves the lease
through the keeper and the peers through the peer table; `resync()` and `report_healthy()` are
the Agent's (a switch ends with a full re-listing; a refusal shows on /healthz at once).
"""

import logging

from .backends import make_backend
from .config import ConfigError, check_underlay_addresses, parse_network_config
from .config_watch import ConfigWatch, config_changes, moves_lease
from .lease_keeping import MAX_BACKOFF
from .registry import ConfigMissing, RegistryError
from .registry.errors import BACKED_OFF_ERRORS

LOG = logging.getLogger("flanneld")


class InForce:
    """The external interface, the network config in force and its running backend."""

    def __init__(self):
        self.iface = None
        self.config = None
        self.backend = None
        self.info = None  # the backend's setup() answer: backend_type, vtep_mac, mtu, changes
        # The kernel-events socket while repairs on events run (the kernel follower's): each
        # backend started tells it its own changes (Backend.announce_to).
        self.kernel_events = None

    @property
    def mtu(self):
        return self.info["mtu"]


class ConfigFollower:
    """`backend_flags` (backends.BackendFlags) go to the backends; `refused_backoff()` is the wait after etcd refused
    us (shared with the Agent's loop); `wait` and `stopped` as for the LeaseKeeper."""

    def __init__(self, registry, in_force, keeper, peer_table, health, resync, report_healthy, refused_backoff,
                 wait, stopped, backend_flags):
        self.registry = registry
        self.in_force = in_force
        self.keeper = keeper
        self.peer_table = peer_table
        self.health = health
        self.resync = resync
        self.report_healthy = report_healthy
        self.refused_backoff = refused_backoff
        self.wait = wait
        self.stopped = stopped
        self.backend_flags = backend_flags
        self.watch = ConfigWatch(getattr(registry, "config_key", None), LOG)

    @property
    def refusal(self):
        """Why the stored config is not in force, or None."""
        return self.watch.refusal

    def forget(self):
        """SIGHUP: examine the stored config again, even a text refused before."""
        self.watch.forget()

    def start(self, public_ip):
        """Fetch the config and start its backend; an exit status, or None to go on."""
        from .backends.base import BackendError

        iface = self.in_force.iface
        config = self.fetch(public_ip)
        if config is None:
            return 0
        self.in_force.config = config
        LOG.info("network config: %s", config)
        LOG.info("using interface %s (%s), public IP %s", iface.name, iface.address, public_ip)
        try:
            self.in_force.backend = make_backend(config, iface, public_ip, self.backend_flags)
            self.in_force.info = self.in_force.backend.setup()
        except BackendError as err:
            LOG.error("backend %s: %s", config.backend.type, err)
            return 1
        for change in self.in_force.info["changes"]:
            LOG.info("backend: %s", change)
        self.keeper.use_backend(public_ip, self.in_force.info)
        return None

    def close(self):
        """Let go of the running backend (its kernel state stays in place)."""
        if self.in_force.backend is not None:
            self.in_force.backend.close()

    def fetch(self, public_ip):
        """Poll <prefix>/config until it is valid and its Network clear of this host's addresses
        and the live leases' PublicIPs; None when stopped first."""
        last_reason = None
        while not self.stopped():
            refused = False
            try:
                # Not strict: keys written by other tools are warned about, not refused.
                text = self.registry.get_config()
                config = parse_network_config(text, strict=False)
                check_underlay_addresses(config, self._underlay(public_ip, self._leases_beside(config)))
                for warning in config.warnings:
                    LOG.warning("network config at %s: %s", self.registry.config_key, warning)
                self.watch.started_with(text)
                return config
            except ConfigError as err:
                reason = "network config at %s rejected: %s" % (self.registry.config_key, err)
            except RegistryError as err:
                reason = "cannot fetch network config: %s" % err
                refused = isinstance(err, BACKED_OFF_ERRORS)
            if reason != last_reason:
                LOG.error("%s; retrying %s", reason,
                          "with backoff (1, 2, 4 ... %.0f s)" % MAX_BACKOFF if refused else "every second")
                last_reason = reason
            self.health.set(False, reason)
            self.wait(self.refused_backoff() if refused else 1.0)
        return None

    def check_stored(self):
        """Examine the stored config: it may have changed while the watch was not looking."""
        try:
            text = self.registry.get_config()
        except ConfigMissing:
            text = None
        self.follow(text)

    def _leases_beside(self, config):
        """The leases held outside `config`'s Network: hosts still running on an earlier config,
        whose PublicIPs this Network must not cover. A lease inside the Network with a PublicIP
        inside it is an ordinary bad lease (skipped by every agent): counting it would let one
        junk value stop every new host from starting."""
        return [lease for lease in self.registry.list_leases().leases if lease.subnet not in config.network]

    def _underlay(self, public_ip, leases):
        """(address, whose) of this host's public IP, its interface's addresses and the PublicIPs
        of `leases`: a Network containing one would route the hosts' own traffic into the overlay
        (and every lease would then be refused for a PublicIP inside it)."""
        from .netlink import addresses_of

        iface = self.in_force.iface
        addresses = [(public_ip, "this host (its public IP)")]
        addresses += [(cidr.split("/")[0], "this host (interface %s)" % iface.name)
                      for cidr in addresses_of(iface.index)]
        return addresses + [(lease.attrs.public_ip, "the host holding lease %s" % lease.subnet)
                            for lease in sorted(leases, key=lambda lease: lease.subnet)]

    def follow(self, text):
        """The stored config's text (None: the key is gone), read at start-up or from the watch."""
        config = self.watch.examine(
            text, self.in_force.config,
            lambda: self._underlay(self.keeper.attrs.public_ip, self.peer_table.peers.values()))
        if config is not None:
            self.switch_to(config)
        elif self.health.ok:
            self.report_healthy()  # a refusal shows on /healthz at once

    def switch_to(self, config):
        """Move this host to a new valid config: the new backend starts beside the old one, takes
        the lease (kept when it still fits, else released and a new one acquired) and the peers,
        then the old backend stops, removing what the new one does not use. The lease's
        BackendType/BackendData follow by compare-and-swap. If the new backend cannot start,
        the host runs on the old config and says why."""
        if self._move(config, self.in_force.iface, self.keeper.attrs.public_ip,
                      "moving to network config %s (%s changed)"
                      % (config.digest(), ", ".join(config_changes(self.in_force.config, config))),
                      lambda backend, err: self._keep_old_backend(config, backend, err)):
            LOG.info("network config %s in force", config.digest())

    def move_underlay(self, iface, public_ip):
        """The external interface's address changed to iface.address (`public_ip` is the lease's
        PublicIP from now on): the public IP is claimed, then the backend starts again on the new
        address beside the old one, and the lease keeps its subnet and publishes the new PublicIP
        (and what derives from it, a vxlan VtepMAC) by compare-and-swap. False when it cannot be
        done now (the public IP is another live host's, or the backend refused): the caller tries
        again at its next turn; the old backend runs on meanwhile."""
        why = "moving to %s's address %s (public IP %s)" % (iface.name, iface.address, public_ip)
        duplicate = self.keeper.claim_public_ip(public_ip)
        if duplicate:
            self.health.set(False, "%s: %s" % (why, duplicate))
            return False
        if not self._move(self.in_force.config, iface, public_ip, why,
                          lambda backend, err: self._keep_old_underlay(iface, backend, err)):
            return False
        LOG.info("now on %s's address %s, public IP %s", iface.name, iface.address, public_ip)
        return True

    def _move(self, config, iface, public_ip, why, refused):
        """Start `config`'s backend on `iface` for `public_ip` beside the running one and hand the
        lease and the peers over to it (see switch_to); `refused(backend, err)` when it cannot
        start. True when done."""
        from .backends.base import BackendError
        from .netlink import NetlinkError

        keeper, in_force = self.keeper, self.in_force
        old_config, old_backend = in_force.config, in_force.backend
        self.health.set(False, why)
        backend = None
        try:
            backend = make_backend(config, iface, public_ip, self.backend_flags)
            backend.announce_to(in_force.kernel_events)
            info = backend.setup()
        except (BackendError, NetlinkError, OSError) as err:
            refused(backend, err)
            return False
        for change in info["changes"]:
            LOG.info("backend: %s", change)
        in_force.iface, in_force.config, in_force.backend, in_force.info = iface, config, backend, info
        keeper.use_backend(public_ip, info)
        try:
            if moves_lease(config, keeper.lease.subnet, keeper.lease.ipv6_subnet):
                self.peer_table.forget()
                old_ipv6 = old_config.ipv6.network if old_config.ipv6 is not None else None
                if not keeper.replace(old_config.network, old_ipv6):
                    return False
            else:
                old_ipv6 = old_config.ipv6.network if old_config.ipv6 is not None else None
                new_ipv6 = config.ipv6.network if config.ipv6 is not None else None
                if config.network != old_config.network or old_ipv6 != new_ipv6:
                    keeper.remove_masquerade(keeper.lease.subnet if config.network != old_config.network else None,
                                             old_config.network, keeper.lease.ipv6_subnet if old_ipv6 != new_ipv6
                                             else None, old_ipv6)
                keeper.install(keeper.lease)  # the new backend's device; subnet.env gets its MTU
                self.peer_table.program()
        finally:
            for change in old_backend.teardown(backend):
                LOG.info("old backend %s: %s", old_backend.backend_type, change)
            old_backend.close()
        self.peer_table.program()  # whatever the old one's teardown took
        keeper.publish_attrs()
        self.resync()
        return True

    def _keep_old_underlay(self, iface, backend, err):
        LOG.error("cannot start backend %s on %s's address %s: %s; the old one runs on",
                  self.in_force.config.backend.type, iface.name, iface.address, err)
        if backend is not None:
            for change in backend.teardown(self.in_force.backend):
                LOG.info("abandoned backend %s: %s", self.in_force.config.backend.type, change)
            backend.close()
        self.peer_table.program()  # repair what the attempt disturbed
        self.health.set(False, "cannot move to the external interface's new address: %s" % err)

    def _keep_old_backend(self, config, backend, err):
        LOG.error("cannot start backend %s for network config %s: %s", config.backend.type, config.digest(), err)
        if backend is not None:
            for change in backend.teardown(self.in_force.backend):
                LOG.info("abandoned backend %s: %s", config.backend.type, change)
            backend.close()
        self.watch.refuse("network config %s cannot run here: backend %s: %s"
                          % (config.digest(), config.backend.type, err), self.in_force.config)
        self.peer_table.program()  # repair what the attempt disturbed
        self.report_healthy()
