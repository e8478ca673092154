"""This host's own lease, for the Agent (daemon.py): check its public IP against the on-link
prefixes, acquire the lease (first claiming the public IP), install it (backend, subnet.env,
masquerade), renew it before it expires, re-acquire it when it vanishes or is taken.

A part of the Agent, kept apart so that daemon.py stays the loop: it works on the Agent's state
(registry, options, clock, config, backend, backend_info, attrs, lease, lease_ttl, renew_at,
lease_expires_at, host_id, claim_ttl, iface, _local, _lost_lease, _backoff, _retry_delay,
_needs_resync) and calls its _stop, _wait and _set_health. A lost lease is re-acquired by the
Agent's loop, never from here.
"""

import logging
import socket
import sys

from . import metrics
from .lease import LeaseError, acquire_lease, onlink_address_problem
from .registry import RegistryError
from .subnet_env import render_subnet_env, write_subnet_env

LOG = logging.getLogger("flanneld")
RENEW_RETRY = 60.0
MAX_BACKOFF = 30.0


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


class LeaseKeeping:
    """The Agent's methods that acquire, install, renew and re-acquire its lease."""

    def _follow_onlink_prefixes(self):
        """Follow this host's on-link prefixes (netlink) for the lease checks; exit status 2 when
        our own public IP is the network or broadcast address of one of them, else None."""
        from .netlink import LocalAddresses

        self._local = LocalAddresses(None, listen=True)
        self.registry.onlink_prefixes = self._local.prefixes
        public_ip = self.options.public_ip or str(self.iface.address)
        problem = onlink_address_problem(public_ip, self._local.prefixes())
        if problem:
            flag = "-public-ip" if self.options.public_ip else "-iface"
            sys.stderr.write("flanneld: invalid value for flag %s: public IP %s: no single host answers there; "
                             "choose another address with -public-ip or -iface\n" % (flag, problem))
            return 2
        return None

    def _claim_public_ip(self):
        """Reason the public IP cannot be used by this host, or None once it is held."""
        holder = self.registry.claim_public_ip(self.attrs.public_ip, self.host_id, self.claim_ttl)
        if holder is None:
            return None
        return ("public IP %s is already used by another live host (host id %s, this host %s): two hosts "
                "must not share a public IP; set -public-ip or -iface" % (self.attrs.public_ip, holder, self.host_id))

    def _acquire(self, preferred):
        """Acquire a lease, retrying with bounded backoff; None when stopped first. A reason is
        logged when it starts (or changes), not at every retry: an episode is one line."""
        delay, logged = 1.0, None
        while not self._stop.is_set():
            try:
                reason = self._claim_public_ip()
                if reason is None:
                    return acquire_lease(self.registry, self.config, self.attrs, previous_subnet=preferred,
                                         log=LOG.info)
            except (LeaseError, RegistryError) as err:  # OutOfSubnets is a LeaseError
                reason = "failed to acquire lease: %s" % err
            if reason != logged:
                LOG.error("%s; retrying with backoff (1, 2, 4 ... %.0f s)", reason, MAX_BACKOFF)
                logged = reason
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
            self._set_health(False, reason)

    def _reacquire(self, why):
        """Mark the lease lost: the main loop re-acquires it (_regain_lease), then re-lists, after
        a backoff when it keeps getting lost. Never done from here: a registry that never lists
        our lease would otherwise make this recurse until the stack runs out."""
        self._retry_later("%s; re-acquiring a lease (same subnet if free)" % why)
        self._lost_lease = why
        self.renew_at = None

    def _regain_lease(self):
        """Acquire a lease again (preferring the lost one's subnet) and install it; the caller
        re-lists next. Returns False when stopped first."""
        old_subnet = self.lease.subnet
        lease = self._acquire(old_subnet)
        if lease is None:
            return False
        self._lost_lease = None
        metrics.lease_reacquired()
        if lease.subnet != old_subnet:
            LOG.warning("lease moved from %s to %s", old_subnet, lease.subnet)
            self._remove_masquerade(old_subnet)
        self._install_lease(lease)
        self._needs_resync = True
        return True


class Backoff:
    """The wait before trying again something that keeps failing the same way (an etcd whose index
    goes backwards, a lease that vanishes as soon as it is taken): none the first time, then 1, 2,
    4 ... MAX_BACKOFF s while failures keep coming; none again after `quiet` s without one."""

    def __init__(self, clock, limit=MAX_BACKOFF, quiet=2 * MAX_BACKOFF):
        self.clock = clock
        self.limit = limit
        self.quiet = quiet
        self.delay = 0.0
        self.repeats = 0
        self._last = None

    def failed(self):
        """Count one failure; returns the seconds to wait before the next try."""
        now = self.clock()
        if self._last is None or now - self._last > self.quiet + self.delay:
            self.delay, self.repeats = 0.0, 0
        else:
            self.delay = min(max(self.delay * 2, 1.0), self.limit)
            self.repeats += 1
        self._last = now
        return self.delay
