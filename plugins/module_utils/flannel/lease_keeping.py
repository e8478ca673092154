"""This host's own lease: the LeaseKeeper, a part of the Agent (daemon.py).

It checks the public IP against the on-link prefixes, claims the public IP, acquires the lease,
installs it (the running backend's side, subnet.env, masquerade), renews it before it expires,
and re-acquires it when it was lost. It owns the lease, the attrs this host publishes in it and
the renewal times; it reads the config and backend in force (the config follower's `in_force`)
and reports to the health record. A lost lease is never re-acquired from here: `on_lost(why)`
tells the Agent's loop, which calls `regain()` at its next turn.
"""

import logging
import socket

from . import metrics
from .lease import LeaseAttrs, LeaseError, acquire_lease, onlink_address_problem
from .registry import RegistryError
from .subnet_env import render_subnet_env, write_subnet_env

LOG = logging.getLogger("flanneld")
RENEW_RETRY = 60.0
MAX_BACKOFF = 30.0
CLAIM_REFRESH = 10  # seconds between refreshes of the public IP's claim (its TTL is 3 times that)


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


class LeaseKeeper:
    """`wait(seconds)` sleeps unless stopping (True when stopping), `stopped()` says whether the
    agent is stopping; the rest are the option values the lease depends on."""

    def __init__(self, registry, in_force, health, on_lost, wait, stopped, clock, lease_ttl, host_id, claim_ttl,
                 renew_margin, subnet_file, ip_masq, public_ipv6=""):
        self.registry = registry
        self.in_force = in_force
        self.health = health
        self.on_lost = on_lost
        self.wait = wait
        self.stopped = stopped
        self.clock = clock
        self.lease_ttl = lease_ttl
        self.host_id = host_id
        self.claim_ttl = claim_ttl
        self.renew_margin = renew_margin  # seconds
        self.subnet_file = subnet_file
        self.ip_masq = ip_masq
        self.public_ipv6 = public_ipv6 or None  # -public-ipv6: published on a dual-stack network
        self.attrs = None  # what this host publishes in its lease
        self.lease = None
        self.renew_at = None
        self.expires_at = None  # on `clock`; None for a reservation (no TTL)
        self.lost = None  # why, while the loop has a lease to re-acquire
        self.claim_at = float("inf")  # when the public IP's claim is to be refreshed, from the first one on
        self._local = None  # netlink.LocalAddresses, for the on-link prefixes

    def follow_onlink_prefixes(self, public_ip):
        """Follow this host's on-link prefixes (netlink) for the lease checks; the problem when
        `public_ip` is the network or broadcast address of one of them, else None."""
        from .netlink import LocalAddresses

        self._local = LocalAddresses(None, listen=True)
        self.registry.onlink_prefixes = self._local.prefixes
        return onlink_address_problem(public_ip, self._local.prefixes())

    def close(self):
        if self._local is not None:
            self._local.close()

    def use_backend(self, public_ip, info):
        """The attrs to publish for the backend that `info` (its setup()'s answer) describes; its
        "backend_data", when present, is the lease's BackendData (any type but vxlan). On a
        dual-stack network (EnableIPv6) with PublicIPv6 (null without -public-ipv6)."""
        config = self.in_force.config
        dual_stack = config.ipv6 is not None
        # Modern flanneld's vxlan value names the VNI beside the VtepMAC; v0.10's (IPv4-only) does not.
        vni = config.backend.vni if dual_stack and info["vtep_mac"] else None
        # The backend's PublicIPv6 when it routes IPv6 (-public-ipv6, else its IPv6 underlay's address).
        public_ipv6 = info.get("public_ipv6", self.public_ipv6) if dual_stack else None
        vtep_mac_v6 = info.get("vtep_mac_v6") if dual_stack else None
        self.attrs = LeaseAttrs(public_ip, info["backend_type"], info["vtep_mac"], info.get("backend_data"),
                                modern_format=dual_stack, vni=vni, public_ipv6=public_ipv6, vtep_mac_v6=vtep_mac_v6,
                                vni_v6=vni if vtep_mac_v6 else None)

    def claim_public_ip(self, public_ip=None):
        """Reason the public IP (the published one unless given) cannot be used by this host, or
        None once it is held."""
        public_ip = public_ip or self.attrs.public_ip
        holder = self.registry.claim_public_ip(public_ip, self.host_id, self.claim_ttl)
        if holder is None:
            return None
        return ("public IP %s is already used by another live host (host id %s, this host %s): two hosts "
                "must not share a public IP; set -public-ip or -iface" % (public_ip, holder, self.host_id))

    def refresh_claim(self):
        """Claim the public IP again (claim_public_ip), CLAIM_REFRESH s after the last claim."""
        self.claim_at = self.clock() + CLAIM_REFRESH
        return self.claim_public_ip()

    def acquire(self, preferred, preferred_ipv6=None):
        """Acquire a lease (`preferred`: the IPv4 and IPv6 subnets to ask for first), retrying with
        bounded backoff; None when stopped first. A reason is logged when it starts (or changes),
        not at every retry: an episode is one line."""
        delay, logged = 1.0, None
        while not self.stopped():
            try:
                reason = self.claim_public_ip()
                self.claim_at = self.clock() + CLAIM_REFRESH
                if reason is None:
                    return acquire_lease(self.registry, self.in_force.config, self.attrs, previous_subnet=preferred,
                                         log=LOG.info, previous_ipv6_subnet=preferred_ipv6)
            except (LeaseError, RegistryError) as err:  # OutOfSubnets is a LeaseError
                reason = "failed to acquire lease: %s" % err
            if reason != logged:
                LOG.error("%s; retrying with backoff (1, 2, 4 ... %.0f s)", reason, MAX_BACKOFF)
                logged = reason
            self.health.set(False, reason)
            self.wait(delay)
            delay = min(delay * 2, MAX_BACKOFF)
        return None

    def install(self, lease):
        """Program our own side of the lease and publish subnet.env."""
        self.lease = lease
        self.schedule()
        backend = self.in_force.backend
        changes = backend.configure_lease(lease.subnet)
        if getattr(self.in_force.config, "ipv6", None) is not None and backend.routes_ipv6:
            changes += backend.configure_ipv6_lease(lease.ipv6_subnet)
        for change in changes:
            LOG.info("backend: %s", change)
        if self.write_subnet_env():
            LOG.info("wrote %s: FLANNEL_SUBNET=%s/%d FLANNEL_MTU=%d", self.subnet_file,
                     lease.subnet.network + 1, lease.subnet.prefixlen, self.in_force.mtu)
        self.ensure_masquerade()

    def write_subnet_env(self):
        """Write subnet.env for the lease and the MTU in force; True when its content changed."""
        config = self.in_force.config
        ipv6_network = config.ipv6.network if config.ipv6 is not None else None
        content = render_subnet_env(config.network, self.lease.subnet, self.in_force.mtu, self.ip_masq, ipv6_network,
                                    self.lease.ipv6_subnet if ipv6_network is not None else None)
        return write_subnet_env(self.subnet_file, content)

    def ensure_masquerade(self):
        """Restore the masquerade rules where missing; returns the changes."""
        if not self.ip_masq:
            return []
        from .ipmasq import ensure_masquerade

        changes = ensure_masquerade(self.in_force.config.network, self.lease.subnet)
        ipv6 = getattr(self.in_force.config, "ipv6", None)
        if ipv6 is not None and self.lease.ipv6_subnet is not None:
            changes += ensure_masquerade(ipv6.network, self.lease.ipv6_subnet, iptables="ip6tables")
        for change in changes:
            LOG.info("ip-masq: %s", change)
        return changes

    def remove_masquerade(self, subnet, network=None, ipv6_subnet=None, ipv6_network=None):
        """Drop the rules naming a subnet (or Network) this host no longer holds (`subnet` None:
        none of the iptables ones); with `ipv6_subnet`, the ip6tables rules naming it and
        `ipv6_network` too."""
        if not self.ip_masq:
            return
        from .ipmasq import remove_masquerade

        changes = remove_masquerade(network or self.in_force.config.network, subnet) if subnet is not None else []
        if ipv6_subnet is not None and ipv6_network is not None:
            changes += remove_masquerade(ipv6_network, ipv6_subnet, iptables="ip6tables")
        for change in changes:
            LOG.info("ip-masq: %s", change)

    def schedule(self):
        """Set the renewal time from the lease's remaining TTL."""
        if self.lease.is_reservation:
            self.renew_at = self.expires_at = None  # operator reservations never expire, never renew
            return
        remaining = self.lease.ttl or self.lease_ttl
        self.expires_at = self.clock() + remaining
        # Times are etcd's remaining TTL, not wall clocks, so host clock skew cannot matter.
        wait = remaining - self.renew_margin if remaining > self.renew_margin else remaining / 2.0
        self.renew_at = self.clock() + wait

    def _ttl(self):
        return None if self.lease.is_reservation else self.lease_ttl

    def renew(self):
        try:
            renewed = self.registry.update_lease(self.lease, self.attrs, self._ttl())
        except RegistryError as err:
            LOG.error("renewing lease %s failed: %s; retrying in %.0f s", self.lease.subnet, err, RENEW_RETRY)
            self.renew_at = self.clock() + RENEW_RETRY
            return
        if renewed is None:
            self.on_lost("own lease %s changed or expired before renewal" % self.lease.subnet)
            return
        self.lease = renewed
        self.schedule()
        metrics.lease_renewed()
        LOG.info("renewed lease %s", renewed.subnet)

    def find_own(self, leases, outheld=()):
        """Take our lease from a full listing; why it is lost when it is not there as ours
        (`outheld`: the listing's [(lease, why)] of keys another key's subnets outrank)."""
        for lease, why in outheld:
            if lease.key == self.lease.key and lease.attrs == self.attrs:
                return "own lease %s is not held: %s" % (self.lease.key, why)
        own = [lease for lease in leases if lease.subnet == self.lease.subnet]
        if not own or own[0].attrs != self.attrs or own[0].key != self.lease.key:
            return "own lease %s %s" % (self.lease.subnet, "vanished" if not own else "was taken")
        self.lease = own[0]
        return None

    def follow(self, event):
        """A watch event of our own lease: a renewal (ours or a reservation's) is followed; why
        the lease is lost when it was removed or overwritten."""
        if event.removed or event.lease.attrs != self.attrs:
            what = "was removed" if event.removed else "was overwritten by %s" % event.lease.attrs.public_ip
            return "own lease %s %s" % (event.subnet, what)
        self.lease = event.lease
        self.schedule()
        return None

    def lose(self, why):
        """The lease is gone or taken: no renewal until `regain()`."""
        self.lost = why
        self.renew_at = None

    def regain(self):
        """Acquire a lease again (preferring the lost one's subnet) and install it; the caller
        re-lists next. Returns False when stopped first."""
        old_subnet, old_ipv6_subnet = self.lease.subnet, self.lease.ipv6_subnet
        lease = self.acquire(old_subnet, old_ipv6_subnet)
        if lease is None:
            return False
        self.lost = None
        metrics.lease_reacquired()
        if lease.subnet != old_subnet:
            LOG.warning("lease moved from %s to %s", old_subnet, lease.subnet)
        ipv6 = getattr(self.in_force.config, "ipv6", None)
        self.remove_masquerade(old_subnet if lease.subnet != old_subnet else None, None,
                               old_ipv6_subnet if lease.ipv6_subnet != old_ipv6_subnet else None,
                               ipv6.network if ipv6 is not None else None)
        self.install(lease)
        return True

    def replace(self, old_network, old_ipv6_network=None):
        """Give up a lease the new config has no room for and acquire one that fits; False when
        stopped first."""
        old_subnet = self.lease.subnet
        LOG.info("lease %s does not fit the new network config; releasing it", old_subnet)
        self.remove_masquerade(old_subnet, old_network, self.lease.ipv6_subnet, old_ipv6_network)
        self.registry.delete_lease(self.lease)
        # Re-keyed only (IPv6 turned on or off): the IPv4 subnet it held, now free, is asked for first.
        lease = self.acquire(old_subnet if self.in_force.config.is_compatible(old_subnet) else None)
        if lease is None:
            return False
        if lease.subnet != old_subnet:
            LOG.warning("lease moved from %s to %s", old_subnet, lease.subnet)
        self.install(lease)
        return True

    def publish_attrs(self):
        """Write the attrs of a new backend into our lease (compare-and-swap)."""
        if self.lease.attrs == self.attrs:
            return
        updated = self.registry.update_lease(self.lease, self.attrs, self._ttl())
        if updated is None:
            self.on_lost("own lease %s changed while moving to the new config" % self.lease.subnet)
            return
        self.lease = updated
        self.schedule()
        LOG.info("lease %s now published as %s", updated.subnet, updated.attrs.to_json())


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
