"""The external interface, chosen at start-up and followed live, and repairs on kernel events:
the KernelFollower, a part of the Agent (daemon.py).

A thread (kernel_repairs.KernelWatch) reads the kernel's notifications and restores at once the
entries and the device the running backend owns when someone removes or changes them; the
external interface's MTU is followed (the device's MTU, FLANNEL_MTU in subnet.env; docker0
follows at the docker role's next run), and so is its address: when the one in use is removed,
the interface's next IPv4 address is handed to the Agent's loop (`on_underlay_moved`), which
moves the backend and the lease's PublicIP to it. The Agent's periodic reconcile stays as a rare
backstop.
It reads the backend in force (`in_force`) and the peers (`peer_table`), writes subnet.env
through the lease keeper, and does all of it under `lock`, which the Agent's loop holds while it
changes any of them.
"""

import logging
import sys

from . import kernel_repairs, metrics

LOG = logging.getLogger("flanneld")


class KernelFollower:
    def __init__(self, in_force, peer_table, keeper, lock, on_underlay_moved):
        self.in_force = in_force
        self.peer_table = peer_table
        self.keeper = keeper
        self.lock = lock
        self.on_underlay_moved = on_underlay_moved
        self._watch = None
        self._named = frozenset()  # the -iface values: an address named there is never left
        self._waiting_for_address = False

    def choose_interface(self, options):
        """Pick the external interface (in_force.iface) before etcd is asked anything; an exit
        status when none fits (2 when -iface or -iface-regex named no interface here), else None."""
        from .netlink import InterfaceError, select_interface

        self._named = frozenset(options.iface)
        try:
            self.in_force.iface = select_interface(options.iface, options.iface_regex)
        except InterfaceError as err:
            flags = "/".join(name for name, given in (("-iface", options.iface),
                                                      ("-iface-regex", options.iface_regex)) if given)
            if flags:
                sys.stderr.write("flanneld: invalid value for flag %s: %s\n" % (flags, err))
                return 2
            LOG.error("%s", err)
            return 1
        return None

    def check_public_ip(self, options):
        """Exit status 2 when our public IP is the network or broadcast address of an on-link
        prefix (followed from here on for the lease checks), else None."""
        public_ip = options.public_ip or str(self.in_force.iface.address)
        problem = self.keeper.follow_onlink_prefixes(public_ip)
        if problem:
            flag = "-public-ip" if options.public_ip else "-iface"
            sys.stderr.write("flanneld: invalid value for flag %s: public IP %s: no single host answers there; "
                             "choose another address with -public-ip or -iface\n" % (flag, problem))
            return 2
        return None

    def start(self):
        """Start the thread. A thread, not a selector in the loop: the loop waits in the etcd
        long-poll (urllib3, whose socket a selector cannot share) and a repair must not wait for
        it; the lock keeps the backend and its netlink socket to one side at a time."""
        from .netlink.events import GROUPS_IPV6, KernelEvents

        # IPv6 too whatever the config: EnableIPv6 may be turned on while the agent runs.
        events = KernelEvents(GROUPS_IPV6)
        self.in_force.kernel_events = events
        if self.in_force.backend is not None:
            self.in_force.backend.announce_to(events)
        self._watch = kernel_repairs.KernelWatch(events, self.lock, self.owned, self.repair)
        self._watch.start()

    def stop(self):
        if self._watch is not None:
            if self.in_force.backend is not None:
                self.in_force.backend.announce_to(None)
            self.in_force.kernel_events = None
            self._watch.stop()

    def owned(self):
        """What the running backend owns now; None while there is no lease to own anything for."""
        if self.keeper.lost or self.keeper.lease is None or self.in_force.backend is None:
            return None
        return self.in_force.backend.owned()

    def repair(self, repairs):
        """Make the Repairs the events call for (kernel_repairs.needed); logs and counts them."""
        if repairs.underlay_mtu is not None:
            self.follow_underlay_mtu(repairs.underlay_mtu)
        if repairs.underlay_addresses:
            self.follow_underlay_address()
        changes = kernel_repairs.repair(repairs, self.in_force.backend, self.peer_table.peers)
        for change in changes:
            LOG.warning("repaired on a kernel event: %s", change)
        metrics.repaired(changes)

    def follow_underlay_mtu(self, mtu):
        """The external interface's MTU changed: the backend's device follows, and subnet.env
        says the new FLANNEL_MTU."""
        iface = self.in_force.iface
        LOG.warning("%s MTU changed from %d to %d", iface.name, iface.mtu, mtu)
        self.in_force.iface = iface._replace(mtu=mtu)
        self.in_force.info["mtu"], changes = self.in_force.backend.underlay_mtu_changed(mtu)
        for change in changes:
            LOG.info("backend: %s", change)
        if self.keeper.write_subnet_env():
            LOG.info("wrote %s: FLANNEL_MTU=%d", self.keeper.subnet_file, self.in_force.mtu)

    def follow_underlay_address(self):
        """An address of the external interface was added or removed. While the one in use is
        there, nothing changes; once it is gone, the interface's first IPv4 address (global
        before link-local, as at start-up) is handed to the loop. An address that -iface names
        is kept to: the operator chose it."""
        from .netlink import interface_addresses

        iface = self.in_force.iface
        addresses = interface_addresses(iface.index)
        if iface.address in addresses:
            self._waiting_for_address = False
            return
        if iface.address in self._named or not addresses:
            if not self._waiting_for_address:
                which = "that -iface names" if iface.address in self._named else "in use, and no other IPv4 address"
                LOG.warning("%s no longer holds %s, the address %s; the overlay cannot reach this host until "
                            "it is back", iface.name, iface.address, which)
                self._waiting_for_address = True
            return
        self._waiting_for_address = False
        LOG.warning("%s no longer holds %s: moving to its address %s", iface.name, iface.address, addresses[0])
        self.on_underlay_moved(iface._replace(address=addresses[0]))
