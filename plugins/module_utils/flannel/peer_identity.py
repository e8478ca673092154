"""One identity, one lease: which peer leases the agent may program when two claim the same one.

A peer's identity is what the backend keys its kernel or forwarding entries by, so that two
leases with one identity would overwrite each other's entries: the VtepMAC for vxlan (the FDB
entry MAC -> PublicIP exists once per MAC), the PublicKey for wireguard (the device holds one
peer per key), the PublicIP (the next hop) for udp and host-gw and
for the direct routes between vxlan and host-gw hosts. On a dual-stack network a lease also
claims its IPv6 side's: the BackendV6Data VtepMAC (flannel-v6's FDB entry) for vxlan, the
PublicIPv6 (the next hop of the IPv6 route, of kind PublicIP as the IPv4 one) for host-gw; and,
whatever the backend, its IPv6 subnet: two dual-stack keys can name one (hosts acquiring at once),
and only one host may be routed there. A lease whose identity a live lease already holds, or
that is this host's own, is a conflict: it is skipped (logged once with both keys, counted),
never programmed, and its removal removes nothing. When the holder goes, the next claimant
becomes the holder and is programmed.

The holder is the lease whose key etcd created first (v2 createdIndex, v3 create_revision; the
subnet breaks a tie). Every host reads the same numbers from etcd, so every host picks the same
holder whatever order it learnt the leases in (one listing at start-up, or watch events one by
one). The first lease seen would differ between hosts, and the lowest modifiedIndex would move
with every renewal. A live host keeps its entries against a copy written later, since it created
its key first. Limits: a key created earlier and later rewritten with a copied identity counts
from its creation; upstream flanneld renews with a plain PUT, which re-creates its key in etcd
v2, so a copy of an upstream host's identity written before that host's last renewal holds.

Pure logic (no netlink, no etcd): the peer table (peer_table.py) feeds it leases and programs
what it answers.
"""

import collections
import logging

from . import metrics
from .lease import IPV6_SUBNET, PUBLIC_IP, PUBLIC_KEY, VTEP_MAC, subnet_key

# `holder`: the subnet of the lease that holds `identity`, or None when it is this host's own.
Conflict = collections.namedtuple("Conflict", "subnet identity holder")
# What one change asks of the backend: subnets to unprogram first, then leases to program, with
# the conflicts that began and the skipped leases that became holders.
Changes = collections.namedtuple("Changes", "unprogrammed programmed conflicts resolved")


def lease_identity(backend_type, attrs):
    """(kind, value) identifying a peer with `attrs` to a backend of `backend_type`, or None."""
    if backend_type == "vxlan" and attrs.backend_type == "vxlan":
        return (VTEP_MAC, attrs.vtep_mac.lower()) if attrs.vtep_mac else None
    if backend_type == "wireguard" and attrs.backend_type == "wireguard":
        from .backends.wireguard_keys import lease_key_and_port  # a vxlan agent never loads it

        key = lease_key_and_port(attrs.backend_data)[0]
        return (PUBLIC_KEY, key) if isinstance(key, str) and key else None
    return (PUBLIC_IP, attrs.public_ip)


def lease_identities(backend_type, attrs, ipv6=False):
    """Every (kind, value) a peer with `attrs` claims: lease_identity's, and on a dual-stack
    network (`ipv6`) its IPv6 side's (see the module's note)."""
    found = [identity for identity in (lease_identity(backend_type, attrs),) if identity]
    if not ipv6 or backend_type not in ("vxlan", "host-gw"):
        return found
    if backend_type == "vxlan" and attrs.backend_type == "vxlan":
        if attrs.vtep_mac_v6:
            found.append((VTEP_MAC, attrs.vtep_mac_v6.lower()))
    elif attrs.public_ipv6:
        found.append((PUBLIC_IP, attrs.public_ipv6))  # a next hop, as the IPv4 PublicIP
    return found


def holder_order(lease):
    """Sort key: the first lease of a sorted list holds the identity (see the module's note)."""
    return (getattr(lease, "created_index", 0) or 0, lease.subnet.first, lease.subnet.prefixlen)


class IdentityBook:
    """Every valid lease of the other hosts, indexed by identity; `programmable()` are the ones
    that hold theirs. Each method returns Changes for the caller to apply in that order."""

    def __init__(self):
        self.backend_type = None
        self.ipv6 = False  # a dual-stack network: leases claim their IPv6 side's identities too
        self.own = frozenset()
        self.own_subnet = None
        self.leases = {}  # subnet -> Lease
        self.claims = {}  # identity -> set of subnets whose lease claims it
        self.conflicts = {}  # subnet -> Conflict, for every lease skipped now

    def configure(self, backend_type, own_attrs, own_subnet, ipv6=False, own_ipv6_subnet=None):
        """This host's backend type, lease attrs and subnet (and whether the network is
        dual-stack, and its IPv6 subnet); the leases are indexed again when they changed (the
        caller re-lists and re-programs everything after such a change)."""
        own = set(lease_identities(backend_type, own_attrs, ipv6) + [(PUBLIC_IP, own_attrs.public_ip)])
        if ipv6 and own_attrs.public_ipv6:
            own.add((PUBLIC_IP, own_attrs.public_ipv6))
        if ipv6 and own_ipv6_subnet is not None:
            own.add((IPV6_SUBNET, str(own_ipv6_subnet)))
        own = frozenset(own)
        if (backend_type, own, own_subnet, ipv6) == (self.backend_type, self.own, self.own_subnet, self.ipv6):
            return
        self.backend_type, self.own, self.own_subnet, self.ipv6 = backend_type, own, own_subnet, ipv6
        leases = [lease for subnet, lease in self.leases.items() if subnet != own_subnet]
        self.leases, self.claims = {}, {}
        for lease in leases:
            self._add(lease)
        self.conflicts = dict((subnet, conflict) for subnet, conflict in self.conflicts.items()
                              if conflict == self._conflict_of(subnet))

    def programmable(self):
        """{subnet: Lease} of the leases that hold their identity (or have none)."""
        return dict((subnet, lease) for subnet, lease in self.leases.items() if self._conflict_of(subnet) is None)

    def reset(self, leases):
        """Replace every lease (a full listing, this host's own left out); returns Changes whose
        conflicts and resolved are what began or ended (programming is the caller's sync)."""
        self.leases, self.claims = {}, {}
        for lease in leases:
            if lease.subnet != self.own_subnet:
                self._add(lease)
        return self._note_conflicts(set(self.leases) | set(self.conflicts), [], [])

    def put(self, lease):
        """A lease was created or changed."""
        old = self.leases.get(lease.subnet)
        if old is None and lease.subnet not in self.conflicts:
            identities = self.identities_of(lease)
            if not any(identity in self.claims or identity in self.own for identity in identities):
                # A new lease claiming only what nobody claims (each host's first event): it
                # holds its identities, so it is programmed and no conflict begins or ends.
                self._add(lease)
                return Changes([], [lease], [], [])
        affected = self._claimants(old, lease)
        before = self._programmed_among(affected)
        if old is not None:
            self._drop(old)
        self._add(lease)
        return self._changes(affected, before, lease)

    def remove(self, subnet):
        """A lease was deleted or expired."""
        old = self.leases.get(subnet)
        if old is None:
            return self._note_conflicts([subnet], [], [])
        affected = self._claimants(old)
        before = self._programmed_among(affected)
        self._drop(old)
        return self._changes(affected, before, None)

    def identity_of(self, lease):
        """The (kind, value) identity `lease` claims here first, or None."""
        identities = self.identities_of(lease)
        return identities[0] if identities else None

    def identities_of(self, lease):
        """Every (kind, value) identity `lease` claims here."""
        found = lease_identities(self.backend_type, lease.attrs, self.ipv6)
        if self.ipv6 and getattr(lease, "ipv6_subnet", None) is not None:
            found.append((IPV6_SUBNET, str(lease.ipv6_subnet)))
        return found

    # -- internals -------------------------------------------------------------------------------

    def _add(self, lease):
        self.leases[lease.subnet] = lease
        for identity in self.identities_of(lease):
            self.claims.setdefault(identity, set()).add(lease.subnet)

    def _drop(self, lease):
        del self.leases[lease.subnet]
        for identity in self.identities_of(lease):
            claimants = self.claims.get(identity)
            if claimants is not None:
                claimants.discard(lease.subnet)
                if not claimants:
                    del self.claims[identity]

    def _claimants(self, *leases):
        """The subnets whose programming a change of `leases` may change: theirs, and every other
        claimant of their identities."""
        affected = set()
        for lease in leases:
            if lease is None:
                continue
            affected.add(lease.subnet)
            for identity in self.identities_of(lease):
                affected.update(self.claims.get(identity, ()))
        return affected

    def _holder(self, identity):
        if identity in self.own:
            return None
        return min((self.leases[subnet] for subnet in self.claims[identity]), key=holder_order).subnet

    def _conflict_of(self, subnet):
        """The Conflict that keeps the lease at `subnet` from being programmed, or None."""
        lease = self.leases.get(subnet)
        for identity in self.identities_of(lease) if lease is not None else ():
            holder = self._holder(identity)
            if holder != subnet:
                return Conflict(subnet, identity, holder)
        return None

    def _programmed_among(self, subnets):
        return set(subnet for subnet in subnets if subnet in self.leases and self._conflict_of(subnet) is None)

    def _changes(self, affected, before, changed):
        affected = affected | self._claimants(changed)
        after = self._programmed_among(affected)
        # The changed lease first: the entries it no longer uses go before another claims them.
        programmed = [self.leases[changed.subnet]] if changed is not None and changed.subnet in after else []
        programmed += [self.leases[subnet] for subnet in sorted(after - before)
                       if changed is None or subnet != changed.subnet]
        return self._note_conflicts(affected, sorted(before - after), programmed)

    def _note_conflicts(self, subnets, unprogrammed, programmed):
        """Bring self.conflicts up to date for `subnets`; the ones that began and ended go into
        the Changes, so each conflict is reported once however often the leases are listed."""
        began, ended = [], []
        for subnet in sorted(subnets):
            conflict = self._conflict_of(subnet)
            if conflict == self.conflicts.get(subnet):
                continue
            if conflict is None:
                del self.conflicts[subnet]
                if subnet in self.leases:  # it holds its identity now
                    ended.append(subnet)
            else:
                self.conflicts[subnet] = conflict
                began.append(conflict)
        return Changes(unprogrammed, programmed, began, ended)


def _lease_key(book, subnet):
    """The key of the lease held for `subnet` (with its IPv6 subnet on a dual-stack network)."""
    lease = book.leases.get(subnet)
    return subnet_key(subnet, getattr(lease, "ipv6_subnet", None))


def report(changes, book, log=None):
    """Log each conflict that began (one line naming both keys) and count it; log the ends."""
    if not changes.conflicts and not changes.resolved:
        return  # the usual event: nothing to say
    log = log or logging.getLogger("flanneld")
    own_key = subnet_key(book.own_subnet) if book.own_subnet is not None else "?"
    for conflict in changes.conflicts:
        kind, value = conflict.identity
        lease = book.leases.get(conflict.subnet)
        if conflict.holder is None:
            held = "is this host's own (lease %s)" % own_key
        else:
            holder = book.leases[conflict.holder]
            held = "is held by lease %s, created first (etcd index %s, this one %s)" % (
                _lease_key(book, conflict.holder), getattr(holder, "created_index", 0), getattr(lease, "created_index", 0))
        log.warning("skipping lease %s: its %s %s %s; each %s must belong to one lease, so it is not programmed",
                    _lease_key(book, conflict.subnet), kind, value, held, kind)
        metrics.conflicting_lease(kind)
    for subnet in changes.resolved:
        lease = book.leases[subnet]
        log.info("lease %s now holds its %s %s: programming it", _lease_key(book, subnet), *book.identity_of(lease))
