"""The agent's main loop: config -> lease -> backend -> subnet.env, then watch, renew, reconcile.
A changed network config moves the host to it without a restart (config_watch, _move_to).

Differences from flanneld v0.10 (each fixes a reported failure): a bad or missing config is
retried, not fatal; a lost lease is re-acquired (preferring the same subnet) instead of exiting 0;
renewals are compare-and-swap; peers whose attributes changed are re-programmed; an unparsable
key is skipped; data-plane entries removed behind the agent's back are restored periodically.
"""

import logging
import signal
import socket
import sys
import threading
import time

from . import metrics, missing_libraries
from .config import ConfigError, parse_network_config
from .config_watch import ConfigWatch, config_changes, moves_lease
from .healthz import ListenError, notify_systemd, start_endpoints
from .lease import LEASE_TTL, LeaseAttrs, LeaseError, acquire_lease
from .registry import (ConfigEvent, ConfigMissing, IndexCleared, RegistryAuthError, RegistryError, RegistryUnavailable,
                       make_registry)
from .subnet_env import previous_subnet, render_subnet_env, write_subnet_env

LOG = logging.getLogger("flanneld")
MAX_WATCH_WAIT = 5.0
RENEW_RETRY = 60.0
ETCD_RETRY = 1.0
MAX_BACKOFF = 30.0


class Stopping(Exception):
    """Raised out of a blocking etcd watch when SIGTERM arrives."""


def default_host_id():
    """/etc/machine-id (stable across reboots), else the host name."""
    try:
        with open("/etc/machine-id") as handle:
            machine_id = handle.read().strip()
        if machine_id:
            return machine_id
    except (IOError, OSError):
        pass
    return socket.gethostname()


def make_backend(config, iface, public_ip, options):
    if config.backend.type == "vxlan":
        from .backends.vxlan import VxlanBackend

        backend = VxlanBackend(config, iface, public_ip, offload=options.vxlan_offload)
        LOG.info("tx checksum offload on %s: %s (%s)", backend.device_name,
                 "on" if backend.offload else "off", backend.offload_reason)
        return backend
    if config.backend.type == "udp":
        from .backends.udp import UdpBackend

        return UdpBackend(config, iface, public_ip)
    from .backends.host_gw import HostGwBackend

    return HostGwBackend(config, iface, public_ip)


class Agent:
    """One host's agent. `run()` returns the process exit status."""

    def __init__(self, options, registry, lease_ttl=LEASE_TTL, clock=time.monotonic):
        self.options = options
        self.registry = registry
        self.lease_ttl = lease_ttl
        self.clock = clock
        self.config = None
        self.backend = None
        self.backend_info = None
        self.iface = None
        self.attrs = None
        self.lease = None
        self.peers = {}
        self.index = 0
        self.renew_at = None
        self.lease_expires_at = None  # on self.clock; None for a reservation (no TTL)
        self.reconcile_at = 0.0
        self._health = (False, "starting")
        self._stop = threading.Event()
        self._in_watch = False
        self._needs_resync = False  # set when etcd was unreachable: re-list before watching again
        self._refused_delay = ETCD_RETRY
        self._skipped = set()  # (key, reason) of every bad lease seen: each is logged once
        self.host_id = options.host_id or default_host_id()
        self.config_watch = ConfigWatch(getattr(registry, "config_key", None), LOG)
        # Refreshed at every reconcile, so a replaced host waits at most this long for the IP.
        self.claim_ttl = max(30, 3 * options.reconcile_interval)

    # ---- health and stopping ---------------------------------------------------------------

    def health(self):
        return self._health

    def _set_health(self, ok, reason):
        if (ok, reason) != self._health:
            LOG.info("health: %s (%s)", "ok" if ok else "unhealthy", reason)
        self._health = (ok, reason)

    def stop(self, *_signal_args):
        self._stop.set()
        if self._in_watch:
            raise Stopping()

    def hangup(self, *_signal_args):
        """SIGHUP: re-read the network config (a refused one is tried again), re-list the leases
        and reconcile the data plane at the next step."""
        LOG.info("SIGHUP: re-listing leases and reconciling the data plane (and re-reading the network config)")
        self.config_watch.forget()
        self._needs_resync = True
        self.reconcile_at = 0.0

    @property
    def bad_lease_count(self):
        return len(self._skipped)

    def _skip(self, key, reason):
        """A lease that fails its checks: logged once, counted, never used."""
        if (key, reason) not in self._skipped:
            self._skipped.add((key, reason))
            # A key is anyone's text: escaped, so that it can never forge a log line.
            LOG.warning("skipping %s: %s", str(key)[:200].encode("unicode_escape").decode("ascii"), reason)

    def _wait(self, seconds):
        """Sleep that ends early on stop; True when stopping."""
        return self._stop.wait(seconds)

    # ---- start-up --------------------------------------------------------------------------

    def _fetch_config(self):
        """Poll <prefix>/config until it is valid; None when stopped first."""
        last_reason = None
        while not self._stop.is_set():
            refused = False
            try:
                # Not strict: keys written by other tools are warned about, not refused.
                text = self.registry.get_config()
                config = parse_network_config(text, strict=False)
                for warning in config.warnings:
                    LOG.warning("network config at %s: %s", self.registry.config_key, warning)
                self.config_watch.started_with(text)
                return config
            except ConfigError as err:
                reason = "network config at %s rejected: %s" % (self.registry.config_key, err)
            except RegistryError as err:
                reason = "cannot fetch network config: %s" % err
                refused = isinstance(err, RegistryAuthError)
            if reason != last_reason:
                LOG.error("%s; retrying %s", reason,
                          "with backoff (1, 2, 4 ... %.0f s)" % MAX_BACKOFF if refused else "every second")
                last_reason = reason
            self._set_health(False, reason)
            self._wait(self._refused_backoff() if refused else 1.0)
        return None

    def _refused_backoff(self):
        """Seconds to wait after etcd refused our credentials: 1, 2, 4 ... MAX_BACKOFF (reset by
        a successful re-list). Credentials are fixed by a person, not by a quick retry."""
        delay = self._refused_delay
        self._refused_delay = min(delay * 2, MAX_BACKOFF)
        return delay

    def _claim_public_ip(self):
        """Reason the public IP cannot be used by this host, or None once it is held."""
        holder = self.registry.claim_public_ip(self.attrs.public_ip, self.host_id, self.claim_ttl)
        if holder is None:
            return None
        return ("public IP %s is already used by another live host (host id %s, this host %s): two hosts "
                "must not share a public IP; set -public-ip or -iface" % (self.attrs.public_ip, holder, self.host_id))

    def _acquire(self, preferred):
        """Acquire a lease, retrying with bounded backoff; None when stopped first."""
        delay = 1.0
        while not self._stop.is_set():
            try:
                duplicate = self._claim_public_ip()
                if duplicate:
                    LOG.error("%s; retrying in %.0f s", duplicate, delay)
                    self._set_health(False, duplicate)
                    self._wait(delay)
                    delay = min(delay * 2, MAX_BACKOFF)
                    continue
                return acquire_lease(self.registry, self.config, self.attrs, previous_subnet=preferred,
                                     log=LOG.info)
            except (LeaseError, RegistryError) as err:  # OutOfSubnets is a LeaseError
                reason = "failed to acquire lease: %s" % err
            LOG.error("%s; retrying in %.0f s", reason, delay)
            self._set_health(False, reason)
            self._wait(delay)
            delay = min(delay * 2, MAX_BACKOFF)
        return None

    def _install_lease(self, lease):
        """Program our own side of the lease and publish subnet.env."""
        self.lease = lease
        self._schedule_renewal()
        for change in self.backend.configure_lease(lease.subnet):
            LOG.info("backend: %s", change)
        content = render_subnet_env(self.config.network, lease.subnet, self.backend_info["mtu"],
                                    self.options.ip_masq)
        if write_subnet_env(self.options.subnet_file, content):
            LOG.info("wrote %s: FLANNEL_SUBNET=%s/%d FLANNEL_MTU=%d", self.options.subnet_file,
                     lease.subnet.network + 1, lease.subnet.prefixlen, self.backend_info["mtu"])
        self._ensure_masquerade()

    def _ensure_masquerade(self):
        """Restore the masquerade rules where missing; returns the changes."""
        if not self.options.ip_masq:
            return []
        from .ipmasq import ensure_masquerade

        changes = ensure_masquerade(self.config.network, self.lease.subnet)
        for change in changes:
            LOG.info("ip-masq: %s", change)
        return changes

    def _remove_masquerade(self, subnet, network=None):
        """Drop the rules naming a subnet (or Network) this host no longer holds."""
        if not self.options.ip_masq:
            return
        from .ipmasq import remove_masquerade

        for change in remove_masquerade(network or self.config.network, subnet):
            LOG.info("ip-masq: %s", change)

    def _schedule_renewal(self):
        if self.lease.is_reservation:
            self.renew_at = self.lease_expires_at = None  # operator reservations never expire, never renew
            return
        margin = self.options.subnet_lease_renew_margin * 60
        remaining = self.lease.ttl or self.lease_ttl
        self.lease_expires_at = self.clock() + remaining
        # Times are etcd's remaining TTL, not wall clocks, so host clock skew cannot matter.
        wait = remaining - margin if remaining > margin else remaining / 2.0
        self.renew_at = self.clock() + wait

    def start(self):
        """Everything before the watch loop; returns an exit status or None to go on."""
        from .backends.base import BackendError

        iface = self.iface
        self.config = self._fetch_config()
        if self.config is None:
            return 0
        LOG.info("network config: %s", self.config)
        public_ip = self.options.public_ip or str(iface.address)
        LOG.info("using interface %s (%s), public IP %s", iface.name, iface.address, public_ip)
        try:
            self.backend = make_backend(self.config, iface, public_ip, self.options)
            self.backend_info = self.backend.setup()
        except BackendError as err:
            LOG.error("backend %s: %s", self.config.backend.type, err)
            return 1
        for change in self.backend_info["changes"]:
            LOG.info("backend: %s", change)
        self.attrs = LeaseAttrs(public_ip, self.backend_info["backend_type"], self.backend_info["vtep_mac"])
        lease = self._acquire(previous_subnet(self.options.subnet_file))
        if lease is None:
            return 0
        self._install_lease(lease)
        try:
            self._resync()
        except RegistryError as err:  # etcd went away after the lease was taken: the loop retries
            self._set_health(False, "etcd error: %s" % err)
            self._needs_resync = True
        notify_systemd()
        return None

    # ---- steady state ----------------------------------------------------------------------

    def _resync(self):
        """Re-list all leases, program the difference, and mark the agent healthy."""
        listing = self.registry.list_leases(self.config)
        for key, reason in listing.skipped:
            self._skip(key, reason)
        own = [lease for lease in listing.leases if lease.subnet == self.lease.subnet]
        if not own or own[0].attrs != self.attrs:
            self._reacquire("own lease %s %s" % (self.lease.subnet, "vanished" if not own else "was taken"))
            return
        self.lease = own[0]
        current = dict((lease.subnet, lease) for lease in listing.leases if lease.subnet != self.lease.subnet)
        for subnet in sorted(set(self.peers) - set(current)):
            LOG.info("peer removed: %s", subnet)
        for subnet, lease in sorted(current.items()):
            known = self.peers.get(subnet)
            if known is None:
                LOG.info("peer added: %s at %s", subnet, lease.attrs.public_ip)
            elif known.attrs != lease.attrs:
                LOG.info("peer changed: %s now %s", subnet, lease.attrs)
        self.peers = current
        for change in self.backend.sync(self.peers):
            LOG.info("programmed: %s", change)
        self.index = listing.index
        self._needs_resync = False
        self._refused_delay = ETCD_RETRY
        self.reconcile_at = self.clock() + self.options.reconcile_interval
        self._report_healthy()

    def _report_healthy(self):
        skipped = ", bad leases skipped: %d" % len(self._skipped) if self._skipped else ""
        reason = "lease %s, %d peers, config in force %s%s" % (self.lease.subnet, len(self.peers),
                                                               self.config.digest(), skipped)
        if self.config_watch.refusal:
            # Still 200: the data plane runs as it did; a restart would not start on the refused config.
            reason += "; " + self.config_watch.refusal
        if self._health[0]:
            self._health = (True, reason)  # counts change with events: not worth a log line each
        else:
            self._set_health(True, reason)

    def _reacquire(self, why):
        LOG.warning("%s; re-acquiring a lease (same subnet if free)", why)
        self._set_health(False, why)
        old_subnet = self.lease.subnet
        lease = self._acquire(old_subnet)
        if lease is None:
            return
        metrics.lease_reacquired()
        if lease.subnet != old_subnet:
            LOG.warning("lease moved from %s to %s", old_subnet, lease.subnet)
            self._remove_masquerade(old_subnet)
        self._install_lease(lease)
        self._resync()

    def _apply(self, event):
        """Act on one lease event; True when a peer's kernel entries were (re)programmed."""
        if event.subnet == self.lease.subnet:
            if event.removed or event.lease.attrs != self.attrs:
                what = ("was removed" if event.removed
                        else "was overwritten by %s" % event.lease.attrs.public_ip)
                self._reacquire("own lease %s %s" % (event.subnet, what))
            else:
                self.lease = event.lease
                self._schedule_renewal()
            return False
        if event.removed:
            if self.peers.pop(event.subnet, None) is not None:
                LOG.info("peer removed: %s", event.subnet)
                self._log_changes(self.backend.remove_peer(event.subnet))
                return True
            return False
        known = self.peers.get(event.subnet)
        self.peers[event.subnet] = event.lease
        if known is None:
            LOG.info("peer added: %s at %s", event.subnet, event.lease.attrs.public_ip)
        elif known.attrs != event.lease.attrs:
            LOG.info("peer changed: %s now %s", event.subnet, event.lease.attrs)
        else:
            return False  # a renewal: nothing to program
        self._log_changes(self.backend.add_peer(event.lease))
        return True

    @staticmethod
    def _log_changes(changes):
        for change in changes:
            LOG.info("programmed: %s", change)

    def _renew(self):
        try:
            renewed = self.registry.update_lease(self.lease, self.attrs,
                                                 None if self.lease.is_reservation else self.lease_ttl)
        except RegistryError as err:
            LOG.error("renewing lease %s failed: %s; retrying in %.0f s", self.lease.subnet, err, RENEW_RETRY)
            self.renew_at = self.clock() + RENEW_RETRY
            return
        if renewed is None:
            self._reacquire("own lease %s changed or expired before renewal" % self.lease.subnet)
            return
        self.lease = renewed
        self._schedule_renewal()
        metrics.lease_renewed()
        LOG.info("renewed lease %s", renewed.subnet)

    def _reconcile(self):
        repairs = self.backend.sync(self.peers)
        for change in repairs:
            LOG.warning("reconcile repaired: %s", change)
        metrics.repaired(repairs)
        content = render_subnet_env(self.config.network, self.lease.subnet, self.backend_info["mtu"],
                                    self.options.ip_masq)
        if write_subnet_env(self.options.subnet_file, content):
            LOG.warning("reconcile repaired: rewrote %s", self.options.subnet_file)
            metrics.repaired([self.options.subnet_file], "subnet_env")
        metrics.repaired(self._ensure_masquerade(), "masquerade")
        self.reconcile_at = self.clock() + self.options.reconcile_interval
        duplicate = self._claim_public_ip()  # last: the data plane is repaired even without etcd
        if duplicate:
            LOG.error("%s", duplicate)
            self._set_health(False, duplicate)

    def _next_deadline(self):
        deadlines = [self.reconcile_at]
        if self.renew_at is not None:
            deadlines.append(self.renew_at)
        return min(deadlines)

    def _step(self):
        if self._needs_resync:
            self._check_stored_config()  # it may have changed while the watch was not looking
            self._resync()
        now = self.clock()
        if self.renew_at is not None and now >= self.renew_at:
            self._renew()
        if now >= self.reconcile_at:
            self._reconcile()
        wait = min(max(self._next_deadline() - self.clock(), 0.01), MAX_WATCH_WAIT)
        self._in_watch = True
        try:
            if self._stop.is_set():
                return
            events, self.index, skipped = self.registry.watch_leases(self.index, wait, self.config,
                                                                     with_config=True)
        finally:
            self._in_watch = False
        received = time.monotonic()
        if skipped:
            self._skip(*skipped)
        metrics.watch_event(events, skipped)
        for event in events:
            if isinstance(event, ConfigEvent):
                self._on_config_text(event.text)
            else:
                if self._apply(event):
                    metrics.peer_programmed(received)
        if self._health[0] and (skipped or events):
            self._report_healthy()

    # ---- a changed network config ------------------------------------------------------------

    def _check_stored_config(self):
        try:
            text = self.registry.get_config()
        except ConfigMissing:
            text = None
        self._on_config_text(text)

    def _on_config_text(self, text):
        config = self.config_watch.examine(text, self.config)
        if config is not None:
            self._move_to(config)
        elif self._health[0]:
            self._report_healthy()  # a refusal shows on /healthz at once

    def _move_to(self, config):
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
                if not self._release_lease(old_config):
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
        self._publish_attrs()
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

    def _release_lease(self, old_config):
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

    def _publish_attrs(self):
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

    def loop(self):
        while not self._stop.is_set():
            try:
                self._step()
            except IndexCleared as err:
                LOG.info("watch resync: %s", err)
                self._needs_resync = True
            except RegistryError as err:
                # The data plane stays as it is: only the control plane is down or refusing us.
                refused = isinstance(err, RegistryAuthError)
                unreachable = isinstance(err, RegistryUnavailable) and not refused
                self._set_health(False, ("etcd unreachable: %s" if unreachable else "etcd error: %s") % err)
                self._needs_resync = True
                # A refused connection costs nothing, so retry every second, as flanneld does.
                if self._wait(self._refused_backoff() if refused else ETCD_RETRY):
                    break
            except Stopping:
                raise
            except Exception as err:  # a netlink or etcd surprise must not kill the data plane
                LOG.exception("unexpected error: %s; resyncing", err)
                self._set_health(False, "unexpected error: %s" % err)
                self._needs_resync = True
                if self._wait(1.0):
                    break

    def _choose_interface(self):
        """Pick the external interface before etcd is asked anything; an exit status when none
        fits (2 when -iface or -iface-regex named no interface here), else None."""
        from .netlink import InterfaceError, select_interface

        try:
            self.iface = select_interface(self.options.iface, self.options.iface_regex)
        except InterfaceError as err:
            flags = "/".join(name for name, given in (("-iface", self.options.iface),
                                                      ("-iface-regex", self.options.iface_regex)) if given)
            if flags:
                sys.stderr.write("flanneld: invalid value for flag %s: %s\n" % (flags, err))
                return 2
            LOG.error("%s", err)
            return 1
        return None

    def run(self):
        status = self._choose_interface()
        if status is not None:
            return status
        try:
            servers = start_endpoints(self.options, self.health, lambda: metrics.enable(self))
        except ListenError as err:
            sys.stderr.write("flanneld: %s\n" % err)
            return 2
        try:
            status = self.start()
            if status is not None:
                return status
            self.loop()
            return 0
        except Stopping:
            return 0
        finally:
            LOG.info("exiting; the data plane is left in place")
            for server in servers:
                server.shutdown()
            if self.backend is not None:
                self.backend.close()


def run_agent(options):
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    # The agent reports etcd trouble once, as a health change; the libraries would log every retry.
    for noisy in ("etcd", "etcd.client", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    # python-etcd speaks v2 only; the v3 registry needs urllib3 alone (and is not made to load etcd).
    needed = None if options.etcd_api == "v2" else ["netaddr", "pyroute2", "urllib3"]
    missing = missing_libraries(needed)
    if missing:
        LOG.error("missing Python libraries: %s", ", ".join(missing))
        return 1
    try:
        registry = make_registry(options.etcd_api, endpoints=options.etcd_endpoints, prefix=options.etcd_prefix,
                                 ca_file=options.etcd_cafile or None, cert_file=options.etcd_certfile or None,
                                 key_file=options.etcd_keyfile or None,
                                 username=options.etcd_username or None,
                                 password=options.etcd_password or None)
    except ValueError as err:
        sys.stderr.write("flanneld: invalid value for flag -etcd-endpoints: %s\n" % err)
        return 2
    agent = Agent(options, registry)
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    signal.signal(signal.SIGHUP, agent.hangup)
    return agent.run()
