"""The agent's main loop: config -> lease -> backend -> subnet.env, then watch, renew, reconcile.
Its parts: the lease (lease_keeping.py) and the network config, fetched at start-up and followed
while running (config_switching.py, which moves the host to a changed config without a restart).

Differences from flanneld v0.10 (each fixes a reported failure): a bad or missing config is
retried, not fatal; a lost lease is re-acquired (preferring the same subnet) instead of exiting 0;
renewals are compare-and-swap; peers whose attributes changed are re-programmed; an unparsable
key is skipped, and so is a lease whose VtepMAC or PublicIP another lease holds (peer_identity.py);
data-plane entries removed behind the agent's back are restored periodically.
"""

import logging
import signal
import sys
import threading
import time

from . import metrics, missing_libraries, peer_identity
from .backends import make_backend
from .bad_leases import BadLeases
from .config_switching import ConfigSwitching
from .config_watch import ConfigWatch
from .etcd_http import Stopping
from .healthz import ListenError, notify_systemd, start_endpoints
from .lease import LEASE_TTL, LeaseAttrs
from .lease_keeping import MAX_BACKOFF, Backoff, LeaseKeeping, default_host_id
from .signals import handle_other_signals
from .registry import ConfigEvent, IndexCleared, RegistryError, RegistryUnavailable, make_registry
from .registry.errors import BACKED_OFF_ERRORS
from .subnet_env import previous_subnet, render_subnet_env, write_subnet_env

LOG = logging.getLogger("flanneld")
MAX_WATCH_WAIT = 5.0
ETCD_RETRY = 1.0


class Agent(LeaseKeeping, ConfigSwitching):
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
        self.peers = {}  # the other hosts' leases that are programmed: each holds its identity
        self.identities = peer_identity.IdentityBook()  # every valid lease of the other hosts
        self.index = 0
        self.renew_at = None
        self.lease_expires_at = None  # on self.clock; None for a reservation (no TTL)
        self.reconcile_at = 0.0
        self._health = (False, "starting")
        self._stop = threading.Event()
        self._needs_resync = False  # set when etcd was unreachable: re-list before watching again
        self._refused_delay = ETCD_RETRY
        self.bad_leases = BadLeases(LOG)
        self._lost_lease = None  # why, while the loop has a lease to re-acquire
        self._backoff = Backoff(clock)  # for failures that repeat (lost lease, etcd's index going back)
        self._retry_delay = 0.0  # what the loop waits before its next step
        self._local = None  # netlink.LocalAddresses, for the on-link prefixes
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
        """SIGTERM, SIGINT: raises Stopping out of the etcd request the agent waits in (and any
        later one), so that it exits at once whatever etcd does; the data plane stays."""
        self._stop.set()
        self.registry.gate.close()

    def hangup(self, *_signal_args):
        """SIGHUP: re-read the network config (a refused one is tried again), re-list the leases
        and reconcile the data plane at the next step."""
        LOG.info("SIGHUP: re-listing leases and reconciling the data plane (and re-reading the network config)")
        self.config_watch.forget()
        self._needs_resync = True
        self.reconcile_at = 0.0

    def _wait(self, seconds):
        """Sleep that ends early on stop; True when stopping."""
        return self._stop.wait(seconds)

    def _refused_backoff(self):
        """Seconds to wait after etcd refused our credentials: 1, 2, 4 ... MAX_BACKOFF (reset by
        a successful re-list). Credentials are fixed by a person, not by a quick retry."""
        delay = self._refused_delay
        self._refused_delay = min(delay * 2, MAX_BACKOFF)
        return delay

    # ---- start-up --------------------------------------------------------------------------

    def start(self):
        """Everything before the watch loop; returns an exit status or None to go on."""
        from .backends.base import BackendError

        iface = self.iface
        public_ip = self.options.public_ip or str(iface.address)
        self.config = self._fetch_config(public_ip)
        if self.config is None:
            return 0
        LOG.info("network config: %s", self.config)
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
            if not self._lost_lease:
                self._check_stored_config()  # changed after it was fetched, before the listing?
        except RegistryError as err:  # etcd went away after the lease was taken: the loop retries
            self._set_health(False, "etcd error: %s" % err)
            self._needs_resync = True
        notify_systemd()
        return None

    # ---- steady state ----------------------------------------------------------------------

    def _resync(self):
        """Re-list all leases, program the difference, and mark the agent healthy."""
        if self._lost_lease:
            self._needs_resync = True  # after the loop re-acquired the lease
            return
        listing = self.registry.list_leases(self.config)
        self.bad_leases.listed(listing.skipped)
        if listing.index < self.index:  # a reset: this listing is the state from now on
            LOG.warning("etcd's index went back from %d to %d (etcd restored or replaced?); following it from here",
                        self.index, listing.index)
            self.index = listing.index
        own = [lease for lease in listing.leases if lease.subnet == self.lease.subnet]
        if not own or own[0].attrs != self.attrs:
            self._reacquire("own lease %s %s" % (self.lease.subnet, "vanished" if not own else "was taken"))
            return
        self.lease = own[0]
        book = self._identity_book()
        peer_identity.report(book.reset(listing.leases), book)
        current = book.programmable()
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
        skipped = ", bad leases skipped: %d" % self.bad_leases.count if self.bad_leases.count else ""
        if self.identities.conflicts:
            skipped += ", conflicting leases skipped: %d" % len(self.identities.conflicts)
        reason = "lease %s, %d peers, config in force %s%s" % (self.lease.subnet, len(self.peers),
                                                               self.config.digest(), skipped)
        if self.config_watch.refusal:
            # Still 200: the data plane runs as it did; a restart would not start on the refused config.
            reason += "; " + self.config_watch.refusal
        if self._health[0]:
            self._health = (True, reason)  # counts change with events: not worth a log line each
        else:
            self._set_health(True, reason)

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
        book = self._identity_book()
        changes = book.remove(event.subnet) if event.removed else book.put(event.lease)
        peer_identity.report(changes, book)
        for subnet in changes.unprogrammed:  # a lease the book skips was never programmed
            self.peers.pop(subnet, None)
            LOG.info("peer removed: %s", subnet)
            self._log_changes(self.backend.remove_peer(subnet))
        programmed = bool(changes.unprogrammed)
        for lease in changes.programmed:
            known = self.peers.get(lease.subnet)
            self.peers[lease.subnet] = lease
            if known is None:
                LOG.info("peer added: %s at %s", lease.subnet, lease.attrs.public_ip)
            elif known.attrs != lease.attrs:
                LOG.info("peer changed: %s now %s", lease.subnet, lease.attrs)
            else:
                continue  # a renewal: nothing to program
            self._log_changes(self.backend.add_peer(lease))
            programmed = True
        return programmed

    def _identity_book(self):
        """The IdentityBook, told this host's current backend type, lease attrs and subnet."""
        self.identities.configure(self.config.backend.type, self.attrs, self.lease.subnet)
        return self.identities

    @staticmethod
    def _log_changes(changes):
        for change in changes:
            LOG.info("programmed: %s", change)

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
        if self._lost_lease and not self._regain_lease():
            return  # stopped
        if self._needs_resync:
            self._resync()
            if not self._lost_lease:  # after the listing: a later change comes through the watch
                self._check_stored_config()
        if self._lost_lease:
            return  # lost again at once: the loop waits (backoff) before the next try
        now = self.clock()
        if self.renew_at is not None and now >= self.renew_at:
            self._renew()
        if now >= self.reconcile_at:
            self._reconcile()
        wait = min(max(self._next_deadline() - self.clock(), 0.01), MAX_WATCH_WAIT)
        events, index, skipped = self.registry.watch_leases(self.index, wait, self.config, with_config=True)
        received = time.monotonic()
        if index < self.index:  # not a reason to loop: one re-listing, the new state from then on
            self._retry_later("etcd's index went back from %d to %d (etcd restored or replaced?); re-listing"
                              % (self.index, index))
            return
        self.index = index
        self.bad_leases.follow(events, skipped, self.registry.lease_key)
        metrics.watch_event(events, skipped)
        for event in events:
            if isinstance(event, ConfigEvent):
                self._on_config_text(event.text)
            elif event.subnet is not None:  # not an unreadable key's removal
                if self._apply(event):
                    metrics.peer_programmed(received)
        if self._health[0] and (skipped or events):
            self._report_healthy()

    def loop(self):
        """Steps until stopped. Every retry is a turn of this loop (never a recursive call), after a
        wait when the same failure repeats: no etcd answer can exhaust the stack or spin the CPU."""
        while not self._stop.is_set():
            if self._retry_delay:
                delay, self._retry_delay = self._retry_delay, 0.0
                if self._wait(delay):
                    break
            try:
                self._step()
            except IndexCleared as err:
                self._retry_later("watch resync: %s" % err, healthy=True)
            except RegistryError as err:
                # The data plane stays as it is: only the control plane is down or refusing us.
                # A refusal or an unusable reply is not fixed by a quick retry: back off.
                refused = isinstance(err, BACKED_OFF_ERRORS)
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
        status = self._choose_interface() or self._follow_onlink_prefixes()
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
            self._local.close()


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
    handle_other_signals(agent.stop, LOG)
    return agent.run()
