"""The agent's main loop: config -> lease -> backend -> subnet.env, then watch, renew, reconcile.

`Agent` is the loop; the state lives in parts it builds and passes to each other, each owning
its own and calling the others' public methods only:
- health.py `Health`: (ok, reason) for /healthz and the metrics;
- config_switching.py `InForce` (the interface, config and backend running here) and
  `ConfigFollower` (fetches the config at start-up, follows it, switches backend and config);
- lease_keeping.py `LeaseKeeper`: this host's lease (acquire, install, renew, regain);
- peer_table.py `PeerTable`: the other hosts' programmed leases and their identity book;
- kernel_following.py `KernelFollower`: repairs on the kernel's notifications, from a thread.
The loop feeds them events: the etcd watch (leases and the config), its timers (renewal, claim,
reconcile, and the backend's own: Backend.upkeep_in) and signals (stop, SIGHUP).

Differences from flanneld v0.10 (each fixes a reported failure): a bad or missing config is
retried, not fatal; a lost lease is re-acquired (preferring the same subnet) instead of exiting 0;
renewals are compare-and-swap; peers whose attributes changed are re-programmed; an unparsable
key is skipped, and so is a lease whose VtepMAC or PublicIP another lease holds (peer_identity.py);
data-plane entries removed behind the agent's back are restored at once, and a new address of the
external interface is moved to, keeping the subnet (kernel_following.py).
"""

import logging
import signal
import sys
import threading
import time

from . import metrics, missing_libraries
from .backends import backend_flags
from .bad_leases import BadLeases
from .changes import SUBNET_ENV, Change
from .config_switching import ConfigFollower, InForce
from .etcd_http import Stopping
from .health import Health
from .healthz import ListenError, notify_systemd, start_endpoints
from .lease import LEASE_TTL
from .kernel_following import KernelFollower
from .lease_keeping import CLAIM_REFRESH, MAX_BACKOFF, Backoff, LeaseKeeper, default_host_id
from .peer_table import PeerTable
from .signals import handle_other_signals
from .registry import ConfigEvent, IndexCleared, RegistryError, RegistryUnavailable, make_registry, names_another_key
from .registry.errors import BACKED_OFF_ERRORS
from .subnet_env import previous_subnets

LOG = logging.getLogger("flanneld")
# The longest the etcd watch waits before it is asked again: the claim's period, so that an idle
# agent wakes once per claim refresh, whose request would notice an etcd that went away silently.
MAX_WATCH_WAIT = float(CLAIM_REFRESH)
ETCD_RETRY = 1.0


class Agent:
    """One host's agent. `run()` returns the process exit status."""

    def __init__(self, options, registry, lease_ttl=LEASE_TTL, clock=time.monotonic, wait=None):
        """`wait(seconds)` is the sleep that ends early on stop (True when stopping): the stop
        flag's own unless a test gives one that does not sleep."""
        self.options = options
        self.registry = registry
        self.clock = clock
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self.reconcile_interval = options.reconcile_interval
        self.health = Health()
        self.bad_leases = BadLeases(LOG)
        self.in_force = InForce()
        self.keeper = LeaseKeeper(
            registry, self.in_force, self.health, on_lost=self.reacquire,
            wait=self._wait, stopped=self._stop.is_set, clock=clock, lease_ttl=lease_ttl,
            host_id=options.host_id or default_host_id(),
            # Refreshed every CLAIM_REFRESH s, so a replaced host waits at most this long for the IP.
            claim_ttl=3 * CLAIM_REFRESH,
            renew_margin=options.subnet_lease_renew_margin * 60, subnet_file=options.subnet_file,
            ip_masq=options.ip_masq, public_ipv6=getattr(options, "public_ipv6", ""))  # tests give bare options
        self.peer_table = PeerTable(self.in_force, self.keeper)
        # Held by the loop while it changes the backend, the lease or the peers, and by the
        # kernel-events thread while it repairs.
        self._lock = threading.RLock()
        self.kernel = KernelFollower(self.in_force, self.peer_table, self.keeper, self._lock,
                                     on_underlay_moved=self._underlay_moved)
        self._new_underlay = None  # the external interface with its new address, until moved to
        self.follower = ConfigFollower(
            registry, self.in_force, self.keeper, self.peer_table, self.health, resync=self.resync,
            report_healthy=self.report_healthy, refused_backoff=self._refused_backoff,
            wait=self._wait, stopped=self._stop.is_set,
            backend_flags=backend_flags(options))
        self.index = 0
        self.reconcile_at = 0.0
        self._needs_resync = False  # set when etcd was unreachable: re-list before watching again
        self._refused_delay = ETCD_RETRY
        self._backoff = Backoff(clock)  # for failures that repeat (lost lease, etcd's index going back)
        self._retry_delay = 0.0  # what the loop waits before its next step

    # ---- signals, stopping and retries ----------------------------------------------------

    def stop(self, *_signal_args):
        """SIGTERM, SIGINT: raises Stopping out of the etcd request the agent waits in (and any
        later one), so that it exits at once whatever etcd does; the data plane stays."""
        self._stop.set()
        self.registry.gate.close()

    def hangup(self, *_signal_args):
        """SIGHUP: re-read the network config (a refused one is tried again), re-list the leases
        and reconcile the data plane at the next step."""
        LOG.info("SIGHUP: re-listing leases and reconciling the data plane (and re-reading the network config)")
        self.follower.forget()
        self._needs_resync = True
        self.reconcile_at = 0.0

    def _underlay_moved(self, iface):
        """The kernel-events thread saw the external interface's address in use go: the loop moves
        to `iface`'s address at its next turn (within MAX_WATCH_WAIT), with its etcd requests."""
        self._new_underlay = iface

    def _refused_backoff(self):
        """Seconds to wait after etcd refused our credentials: 1, 2, 4 ... MAX_BACKOFF (reset by
        a successful re-list). Credentials are fixed by a person, not by a quick retry."""
        delay = self._refused_delay
        self._refused_delay = min(delay * 2, MAX_BACKOFF)
        return delay

    def _retry_later(self, reason, healthy=False):
        """Re-list at the next step; when this keeps happening, after a backoff (1, 2, 4 ... s)."""
        self._retry_delay = self._backoff.failed()
        if self._retry_delay:
            reason += " (%d times in a row; next try in %.0f s)" % (
                self._backoff.repeats + 1, self._retry_delay)
        self._needs_resync = True
        if healthy:
            LOG.info("%s", reason)
        else:
            LOG.warning("%s", reason)
            self.health.set(False, reason)

    def reacquire(self, why):
        """Mark the lease lost: the loop re-acquires it (regain_lease), then re-lists, after a
        backoff when it keeps getting lost. Never done at once: a registry that never lists our
        lease would otherwise make this recurse until the stack runs out."""
        self._retry_later("%s; re-acquiring a lease (same subnet if free)" % why)
        self.keeper.lose(why)

    def regain_lease(self):
        """Re-acquire the lost lease; the next step re-lists. False when stopped first."""
        if not self.keeper.regain():
            return False
        self._needs_resync = True
        return True

    # ---- start-up --------------------------------------------------------------------------

    def start(self):
        """Everything before the watch loop; returns an exit status or None to go on."""
        status = self.follower.start(self.options.public_ip or str(self.in_force.iface.address))
        if status is not None:
            return status
        lease = self.keeper.acquire(*previous_subnets(self.options.subnet_file))
        if lease is None:
            return 0
        self.keeper.install(lease)
        try:
            self.resync()
            if not self.keeper.lost:
                self.follower.check_stored()  # changed after it was fetched, before the listing?
        except RegistryError as err:  # etcd went away after the lease was taken: the loop retries
            self.health.set(False, "etcd error: %s" % err)
            self._needs_resync = True
        notify_systemd()
        return None

    # ---- steady state ----------------------------------------------------------------------

    def resync(self):
        """Re-list all leases, program the difference, and mark the agent healthy."""
        if self.keeper.lost:
            self._needs_resync = True  # after the loop re-acquired the lease
            return
        listing = self.registry.list_leases(self.in_force.config)
        self.bad_leases.listed(listing.skipped)
        if listing.index < self.index:  # a reset: this listing is the state from now on
            LOG.warning("etcd's index went back from %d to %d (etcd restored or replaced?); following it from here",
                        self.index, listing.index)
            self.index = listing.index
        lost = self.keeper.find_own(listing.leases, listing.outheld)
        if lost:
            self.reacquire(lost)
            return
        self.peer_table.reset(listing.leases)
        self.index = listing.index
        self._needs_resync = False
        self._refused_delay = ETCD_RETRY
        self.reconcile_at = self.clock() + self.reconcile_interval
        self.report_healthy()

    def report_healthy(self):
        skipped = ", bad leases skipped: %d" % self.bad_leases.count if self.bad_leases.count else ""
        if self.peer_table.conflicts:
            skipped += ", conflicting leases skipped: %d" % self.peer_table.conflicts
        reason = "lease %s, %d peers, config in force %s%s" % (
            self.keeper.lease.subnet, len(self.peer_table.peers), self.in_force.config.digest(), skipped)
        if self.follower.refusal:
            # Still 200: the data plane runs as it did; a restart would not start on the refused config.
            reason += "; " + self.follower.refusal
        self.health.healthy(reason)

    def apply(self, event):
        """Act on one lease event; True when a peer's kernel entries were (re)programmed."""
        if names_another_key(event, self.peer_table.held(event.subnet)):
            self._needs_resync = True  # two keys name one subnet: the listing decides which one holds it
            return False
        if event.subnet != self.keeper.lease.subnet:
            return self.peer_table.apply(event)
        lost = self.keeper.follow(event)
        if lost:
            self.reacquire(lost)
        return False

    def _reconcile(self):
        repairs = self.peer_table.repair()
        for change in repairs:
            LOG.warning("reconcile repaired: %s", change)
        metrics.repaired(repairs)
        if self.keeper.write_subnet_env():
            LOG.warning("reconcile repaired: rewrote %s", self.keeper.subnet_file)
            metrics.repaired([Change(SUBNET_ENV, "rewrote", self.keeper.subnet_file)])
        metrics.repaired(self.keeper.ensure_masquerade())
        self.reconcile_at = self.clock() + self.reconcile_interval

    def _refresh_claim(self):
        duplicate = self.keeper.refresh_claim()
        if duplicate:
            LOG.error("%s", duplicate)
            self.health.set(False, duplicate)

    def _next_deadline(self):
        deadlines = [self.reconcile_at, self.keeper.claim_at]
        if self.keeper.renew_at is not None:
            deadlines.append(self.keeper.renew_at)
        upkeep_in = self.in_force.backend.upkeep_in()
        if upkeep_in is not None:
            deadlines.append(self.clock() + upkeep_in)
        return min(deadlines)

    def step(self):
        """One turn: catch up (lost lease, re-listing), run the timers that are due, then wait for
        events until the next deadline: the etcd watch's, while the kernel's notifications are
        handled by the KernelFollower's thread (both under the lock, the watch's wait outside it)."""
        with self._lock:
            wait = self._before_watch()
        if wait is None:
            return
        answer = self.registry.watch_leases(self.index, wait, self.in_force.config, with_config=True)
        received = time.monotonic()
        with self._lock:
            self._on_watch_answer(*answer, received=received)

    def _before_watch(self):
        """The seconds the watch may wait, or None to go round the loop again first."""
        if self.keeper.lost and not self.regain_lease():
            return None  # stopped
        if self._needs_resync:
            self.resync()
            if not self.keeper.lost:  # after the listing: a later change comes through the watch
                self.follower.check_stored()
        if self.keeper.lost:
            return None  # lost again at once: the loop waits (backoff) before the next try
        if self._new_underlay is not None and self.follower.move_underlay(
                self._new_underlay, self.options.public_ip or str(self._new_underlay.address)):
            self._new_underlay = None  # else tried again next turn
        now = self.clock()
        if self.keeper.renew_at is not None and now >= self.keeper.renew_at:
            self.keeper.renew()
        if now >= self.reconcile_at:
            self._reconcile()
        upkeep_in = self.in_force.backend.upkeep_in()
        if upkeep_in is not None and upkeep_in <= 0:
            self.in_force.backend.upkeep()
        if now >= self.keeper.claim_at:
            self._refresh_claim()  # after the reconcile: the data plane is repaired even without etcd
        return min(max(self._next_deadline() - self.clock(), 0.01), MAX_WATCH_WAIT)

    def _on_watch_answer(self, events, index, skipped, received):
        """The lease and config events of one watch answer, read at `received` (time.monotonic())."""
        if index < self.index:  # not a reason to loop: one re-listing, the new state from then on
            self._retry_later("etcd's index went back from %d to %d (etcd restored or replaced?); re-listing"
                              % (self.index, index))
            return
        self.index = index
        self.bad_leases.follow(events, skipped, self.registry.lease_key)
        metrics.watch_event(events, skipped)
        for event in events:
            if isinstance(event, ConfigEvent):
                self.follower.follow(event.text)
            elif event.subnet is not None:  # not an unreadable key's removal
                if self.apply(event):
                    metrics.peer_programmed(received)
        if self.health.ok and (skipped or events):
            self.report_healthy()

    def loop(self):
        """Steps until stopped. Every retry is a turn of this loop (never a recursive call), after a
        wait when the same failure repeats: no etcd answer can exhaust the stack or spin the CPU."""
        while not self._stop.is_set():
            if self._retry_delay:
                delay, self._retry_delay = self._retry_delay, 0.0
                if self._wait(delay):
                    break
            try:
                self.step()
            except IndexCleared as err:
                self._retry_later("watch resync: %s" % err, healthy=True)
            except RegistryError as err:
                # The data plane stays as it is: only the control plane is down or refusing us.
                # A refusal or an unusable reply is not fixed by a quick retry: back off.
                refused = isinstance(err, BACKED_OFF_ERRORS)
                unreachable = isinstance(err, RegistryUnavailable) and not refused
                self.health.set(False, ("etcd unreachable: %s" if unreachable else "etcd error: %s") % err)
                self._needs_resync = True
                # A refused connection costs nothing, so retry every second, as flanneld does.
                if self._wait(self._refused_backoff() if refused else ETCD_RETRY):
                    break
            except Stopping:
                raise
            except Exception as err:  # a netlink or etcd surprise must not kill the data plane
                LOG.exception("unexpected error: %s; resyncing", err)
                self.health.set(False, "unexpected error: %s" % err)
                self._needs_resync = True
                if self._wait(1.0):
                    break

    def check_flags(self):
        """The flag checks that need the host (the interface; the public IP against the on-link
        prefixes): an exit status, else None."""
        return self.kernel.choose_interface(self.options) or self.kernel.check_public_ip(self.options)

    def run(self):
        """Start, then loop until stopped; the exit status."""
        try:
            status = self.start()
            if status is not None:
                return status
            if self.options.repair_on_events:
                self.kernel.start()
            self.loop()
            return 0
        except Stopping:
            return 0
        finally:
            LOG.info("exiting; the data plane is left in place")
            self.kernel.stop()
            self.follower.close()
            self.keeper.close()


def _serve(agent, options):
    """The agent's run, with its /healthz and /metrics listeners around it."""
    try:
        servers = start_endpoints(options, agent.health, lambda: metrics.enable(agent))
    except ListenError as err:
        sys.stderr.write("flanneld: %s\n" % err)
        return 2
    try:
        return agent.run()
    finally:
        for server in servers:
            server.shutdown()


def run_agent(options):
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    # The format names no thread or process: not looked up for each line (one per peer event).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
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
    return agent.check_flags() or _serve(agent, options)
