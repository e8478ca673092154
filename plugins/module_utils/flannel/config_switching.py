"""The Agent's (daemon.py) network config: fetched at start-up (retried until valid), examined
again when it changes, and a new valid one (config_watch.py decides) put in force without a
restart (flanneld v0.10 reads the config at start only).

A part of the Agent, kept apart so that daemon.py stays the loop: it works on the Agent's state
and calls its lease methods (lease_keeping.py) and its _wait, _refused_backoff, _set_health,
_report_healthy and _resync.
"""

import logging

from .backends import make_backend
from .config import ConfigError, check_underlay_addresses, parse_network_config
from .config_watch import config_changes, moves_lease
from .lease import LeaseAttrs
from .lease_keeping import MAX_BACKOFF
from .registry import ConfigMissing, RegistryError
from .registry.errors import BACKED_OFF_ERRORS

LOG = logging.getLogger("flanneld")


class ConfigSwitching:
    """The Agent's methods that read the stored network config and move the host to a new one."""

    def _fetch_config(self, public_ip):
        """Poll <prefix>/config until it is valid and its Network clear of this host's addresses
        and the live leases' PublicIPs; None when stopped first."""
        last_reason = None
        while not self._stop.is_set():
            refused = False
            try:
                # Not strict: keys written by other tools are warned about, not refused.
                text = self.registry.get_config()
                config = parse_network_config(text, strict=False)
                check_underlay_addresses(config, self._underlay(public_ip, self._leases_beside(config)))
                for warning in config.warnings:
                    LOG.warning("network config at %s: %s", self.registry.config_key, warning)
                self.config_watch.started_with(text)
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
            self._set_health(False, reason)
            self._wait(self._refused_backoff() if refused else 1.0)
        return None

    def _check_stored_config(self):
        """Examine the stored config: it may have changed while the watch was not looking."""
        try:
            text = self.registry.get_config()
        except ConfigMissing:
            text = None
        self._on_config_text(text)

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

        addresses = [(public_ip, "this host (its public IP)")]
        addresses += [(cidr.split("/")[0], "this host (interface %s)" % self.iface.name)
                      for cidr in addresses_of(self.iface.index)]
        return addresses + [(lease.attrs.public_ip, "the host holding lease %s" % lease.subnet)
                            for lease in sorted(leases, key=lambda lease: lease.subnet)]

    def _on_config_text(self, text):
        config = self.config_watch.examine(
            text, self.config, lambda: self._underlay(self.attrs.public_ip, self.peers.values()))
        if config is not None:
            self._switch_to(config)
        elif self._health[0]:
            self._report_healthy()  # a refusal shows on /healthz at once

    def _switch_to(self, config):
        """Move this host to a new valid config: the new backend starts beside the old one, takes
        the lease (kept when it still fits, else released and a new one acquired) and the peers,
        then the old backend stops, removing what the new one does not use. The lease's
        BackendType/BackendData follow by compare-and-swap. If the new backend cannot start,
        the host runs on the old config and says why."""
        from .backends.base import BackendError
        from .netlink import NetlinkError

        old_config, old_backend = self.config, self.backend
        self._set_health(False, "moving to network config %s (%s changed)"
                         % (config.digest(), ", ".join(config_changes(old_config, config))))
        backend = None
        try:
            backend = make_backend(config, self.iface, self.attrs.public_ip, self.options)
            info = backend.setup()
        except (BackendError, NetlinkError, OSError) as err:
            self._keep_old_backend(config, backend, err)
            return
        for change in info["changes"]:
            LOG.info("backend: %s", change)
        self.config, self.backend, self.backend_info = config, backend, info
        self.attrs = LeaseAttrs(self.attrs.public_ip, info["backend_type"], info["vtep_mac"])
        try:
            if moves_lease(config, self.lease.subnet):
                if not self._replace_lease(old_config):
                    return
            else:
                if config.network != old_config.network:
                    self._remove_masquerade(self.lease.subnet, old_config.network)
                self._install_lease(self.lease)  # the new backend's device; subnet.env gets its MTU
                self._log_changes(backend.sync(self.peers))
        finally:
            for change in old_backend.teardown(backend):
                LOG.info("old backend %s: %s", old_backend.backend_type, change)
            old_backend.close()
        self._log_changes(backend.sync(self.peers))  # whatever the old one's teardown took
        self._publish_backend_attrs()
        self._resync()
        LOG.info("network config %s in force", config.digest())

    def _keep_old_backend(self, config, backend, err):
        LOG.error("cannot start backend %s for network config %s: %s", config.backend.type, config.digest(), err)
        if backend is not None:
            for change in backend.teardown(self.backend):
                LOG.info("abandoned backend %s: %s", config.backend.type, change)
            backend.close()
        self.config_watch.refuse("network config %s cannot run here: backend %s: %s"
                                 % (config.digest(), config.backend.type, err), self.config)
        self._log_changes(self.backend.sync(self.peers))  # repair what the attempt disturbed
        self._report_healthy()

    def _replace_lease(self, old_config):
        """Give up a lease the new config has no room for and acquire one that fits; False when
        stopped first."""
        old_subnet = self.lease.subnet
        LOG.info("lease %s does not fit the new network config; releasing it", old_subnet)
        self._remove_masquerade(old_subnet, old_config.network)
        self.registry.delete_lease(self.lease)
        self.peers = {}
        lease = self._acquire(None)
        if lease is None:
            return False
        LOG.warning("lease moved from %s to %s", old_subnet, lease.subnet)
        self._install_lease(lease)
        return True

    def _publish_backend_attrs(self):
        """Write the new BackendType/BackendData into our lease (compare-and-swap)."""
        if self.lease.attrs == self.attrs:
            return
        updated = self.registry.update_lease(self.lease, self.attrs,
                                             None if self.lease.is_reservation else self.lease_ttl)
        if updated is None:
            self._reacquire("own lease %s changed while moving to the new config" % self.lease.subnet)
            return
        self.lease = updated
        self._schedule_renewal()
        LOG.info("lease %s now published as %s", updated.subnet, updated.attrs.to_json())
