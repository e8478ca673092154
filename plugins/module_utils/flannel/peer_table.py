"""The other hosts' leases this host programs: the peer table, for the Agent (daemon.py).

It holds the programmed peers and the identity book (every valid lease of the other hosts, see
peer_identity.py), and turns a full listing (`reset`) or one watch event (`apply`) into calls on
the running backend. The backend and the config are the config follower's (`in_force`); this
host's lease attrs and subnet are the lease keeper's (`keeper`): both are read, never written.
"""

import logging

from . import peer_identity

LOG = logging.getLogger("flanneld")


def log_programmed(changes):
    """One line for what one call programmed (a peer's entries together: a line costs CPU per event)."""
    if changes:
        LOG.info("programmed: %s", "; ".join(changes))


class PeerTable:
    def __init__(self, in_force, keeper):
        self.in_force = in_force
        self.keeper = keeper
        self.peers = {}  # subnet -> the other host's Lease, for the programmed ones
        self.identities = peer_identity.IdentityBook()  # every valid lease of the other hosts

    @property
    def conflicts(self):
        """How many leases are skipped now for an identity another lease (or this host) holds."""
        return len(self.identities.conflicts)

    def _book(self):
        """The IdentityBook, told this host's current backend type, lease attrs and subnet."""
        config = self.in_force.config
        self.identities.configure(config.backend.type, self.keeper.attrs, self.keeper.lease.subnet,
                                  getattr(config, "ipv6", None) is not None, self.keeper.lease.ipv6_subnet)
        return self.identities

    def held(self, subnet):
        """The lease held for `subnet`: this host's own, a programmed peer's, or None."""
        return self.keeper.lease if subnet == self.keeper.lease.subnet else self.peers.get(subnet)

    def reset(self, leases):
        """A full listing (this host's own lease among them): program the difference."""
        book = self._book()
        peer_identity.report(book.reset(leases), book)
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
        self.program()

    def program(self, backend=None):
        """Bring `backend` (the running one when None) to the peers held; logs what it changed."""
        log_programmed((self.in_force.backend if backend is None else backend).sync(self.peers))

    def repair(self):
        """The reconcile's sync of the running backend: returns what it had to restore."""
        return self.in_force.backend.sync(self.peers)

    def forget(self):
        """Drop every peer (the lease is given up: the next listing programs them again)."""
        self.peers = {}

    def apply(self, event):
        """One watch event of another host's lease; True when a peer's kernel entries were
        (re)programmed."""
        backend = self.in_force.backend
        book = self._book()
        changes = book.remove(event.subnet) if event.removed else book.put(event.lease)
        peer_identity.report(changes, book)
        for subnet in changes.unprogrammed:  # a lease the book skips was never programmed
            self.peers.pop(subnet, None)
            _log_peer("peer removed: %s" % subnet, backend.remove_peer(subnet))
        programmed = bool(changes.unprogrammed)
        for lease in changes.programmed:
            known = self.peers.get(lease.subnet)
            self.peers[lease.subnet] = lease
            if known is None:
                what = "peer added: %s at %s" % (lease.subnet, lease.attrs.public_ip)
            elif known.attrs != lease.attrs:
                what = "peer changed: %s now %s" % (lease.subnet, lease.attrs)
            else:
                continue  # a renewal: nothing to program
            _log_peer(what, backend.add_peer(lease))
            programmed = True
        return programmed


def _log_peer(what, changes):
    """One line for a peer's event and what it programmed (a line costs CPU at every event)."""
    if changes:
        LOG.info("%s: %s", what, "; ".join(changes))
    else:
        LOG.info("%s", what)
