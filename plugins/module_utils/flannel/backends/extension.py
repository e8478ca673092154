"""The extension backend, as flanneld v0.10's: the data plane is the user's commands.

- PreStartupCommand runs at set-up, before the lease, with no variables; what it prints on
  standard output (trimmed) is the lease's BackendData, a JSON string. v0.10 publishes stdout and
  stderr together, so a warning on stderr would corrupt the data: here stderr is only logged.
- PostStartupCommand runs once this host's lease is known, with NETWORK, SUBNET and PUBLIC_IP
  (this host's), again when the lease moves to another subnet.
- SubnetAddCommand runs for each peer lease of type extension, SubnetRemoveCommand when one goes,
  with the peer's SUBNET and PUBLIC_IP and its BackendData on standard input (plus a newline,
  as v0.10 writes it). A peer whose lease changed gets the remove command for its old lease,
  then the add command for the new one (v0.10 runs only the add); a renewal runs nothing (v0.10
  runs the add again at every renewal, so recipes written for it are idempotent anyway).

The MTU is the external interface's: the commands' tunnel, if any, is theirs to size.
Commands run without a shell unless their line starts one (commands.py). The post-start and
peer commands run in order on a thread of their own (commands.CommandQueue), each bounded by
Backend.CommandTimeout; a failed one is logged with its exit status and stderr and, for the
post-start and add commands, run again at the next reconcile. Only PreStartupCommand is waited
for: its output goes into the lease, so a failure there stops the backend from starting.
"""

import threading

from ..changes import COMMAND, Change
from ..lease import MAX_LEASE_BYTES, LeaseAttrs, cidr
from . import commands
from .alloc import AllocBackend
from .base import BackendError, peer_scope_problem
from .command_lines import split_command

PRE, POST, ADD, REMOVE = ("PreStartupCommand", "PostStartupCommand", "SubnetAddCommand", "SubnetRemoveCommand")


class ExtensionBackend(AllocBackend):
    """alloc's lease plus the config's commands; the kernel state the commands make is theirs, not
    the agent's, so kernel repairs and the MTU are alloc's."""

    backend_type = "extension"

    def __init__(self, config, iface, public_ip, ipr=None):
        super().__init__(config, iface, public_ip, ipr)
        self.lines = config.backend.commands  # {key: command line}, "" for none
        self.timeout = config.backend.command_timeout
        self.queue = commands.CommandQueue("extension-commands")
        self._lock = threading.Lock()  # the queue's thread updates what follows after a failure
        self._peers = {}  # subnet (str) -> the Lease whose add command ran or is queued
        self._post_subnet = None  # the subnet PostStartupCommand ran or is queued for

    # -- set-up ----------------------------------------------------------------------------------

    def setup(self):
        """Run PreStartupCommand (BackendError when it fails: the lease needs its output).
        Returns {"backend_type": "extension", "vtep_mac": None, "backend_data": its output, or None
        without one, "mtu": the interface's, "changes"}."""
        data, changes = None, []
        if self.lines[PRE]:
            result = commands.run(split_command(self.lines[PRE]), {}, "\n", self.timeout)
            problem = commands.failure(result, self.timeout)
            if problem:
                raise BackendError("%s %s failed: %s" % (PRE, self.lines[PRE], problem))
            data = result.stdout.strip()
            size = len(LeaseAttrs(self.public_ip, self.backend_type, backend_data=data).to_json().encode("utf-8"))
            if size > MAX_LEASE_BYTES:
                raise BackendError("%s printed %d characters: the lease would be %d bytes, above the %d agents read"
                                   % (PRE, len(data), size, MAX_LEASE_BYTES))
            if result.stderr.strip():
                self.log.warning("%s wrote on stderr (not published): %s", PRE, commands.shorten(result.stderr))
            changes.append(Change(COMMAND, "ran", PRE, "ran %s in %.2f s: BackendData %s"
                                  % (PRE, result.seconds, commands.shorten(data) or '""')))
        return {"backend_type": self.backend_type, "vtep_mac": None, "backend_data": data, "mtu": self.iface.mtu,
                "changes": changes}

    def configure_lease(self, subnet):
        """This host's lease: queue PostStartupCommand for it (unless it ran for this subnet).
        Returns the changes."""
        self.subnet = cidr(subnet)
        with self._lock:
            return self._post()

    def _post(self):
        if not self.lines[POST] or self.subnet is None or self._post_subnet == self.subnet:
            return []
        subnet = self._post_subnet = self.subnet
        variables = {"NETWORK": self.config.network, "SUBNET": subnet, "PUBLIC_IP": self.public_ip}

        def failed():
            if self._post_subnet == subnet:
                self._post_subnet = None

        return [self._queue(POST, "for this host's %s" % subnet, variables, "", failed)]

    # -- peers -----------------------------------------------------------------------------------

    def sync(self, peers):
        """Queue the commands that bring the peers run for to `peers` ({subnet: Lease}): the
        remove command for the gone or changed, the add command for the new or changed, and
        again those that failed. Returns one Change per command queued."""
        local = self._addresses.current(reread=True)
        wanted = {}
        for lease in peers.values():
            if self._usable(lease, local):
                wanted[str(cidr(lease.subnet))] = lease
        with self._lock:
            changes = self._post()
            for key in sorted(self._peers):
                if key not in wanted or wanted[key].attrs != self._peers[key].attrs:
                    changes.extend(self._remove(key))
            for key, lease in sorted(wanted.items()):
                if key not in self._peers:
                    changes.extend(self._add(key, lease))
        return changes

    def add_peer(self, lease):
        """One new or changed peer lease; returns the changes."""
        key = str(cidr(lease.subnet))
        if not self._usable(lease, self._addresses.current()):
            return self.remove_peer(key)
        with self._lock:
            known = self._peers.get(key)
            if known is not None and known.attrs == lease.attrs:
                return []
            return (self._remove(key) if known is not None else []) + self._add(key, lease)

    def remove_peer(self, subnet):
        """A peer gone: queue its remove command (with the data of its last lease)."""
        with self._lock:
            return self._remove(str(cidr(subnet)))

    def _usable(self, lease, local_addresses):
        """Whether the commands run for this peer lease (else why not is said once)."""
        subnet = cidr(lease.subnet)
        if self.subnet is not None and subnet == self.subnet:
            return False
        attrs = lease.attrs
        if attrs.backend_type != self.backend_type:
            problem = "backend type %s is not extension" % attrs.backend_type
        elif attrs.backend_data is not None and not isinstance(attrs.backend_data, str):
            problem = "its BackendData is not a JSON string"
        else:
            problem = peer_scope_problem(self.config.network, self.subnet, self.public_ip, local_addresses,
                                         subnet, attrs.public_ip)
        if problem:
            self._warn_once((str(subnet), problem), "ignoring lease %s: %s", subnet, problem)
        return not problem

    def _add(self, key, lease):
        self._peers[key] = lease
        if not self.lines[ADD]:
            return []

        def failed():
            if self._peers.get(key) is lease:
                del self._peers[key]  # the next sync runs it again

        return [self._queue(ADD, "for peer %s at %s" % (key, lease.attrs.public_ip), self._peer_variables(lease),
                            lease.attrs.backend_data or "", failed)]

    def _remove(self, key):
        lease = self._peers.pop(key, None)
        if lease is None or not self.lines[REMOVE]:
            return []
        return [self._queue(REMOVE, "for peer %s at %s" % (key, lease.attrs.public_ip),
                            self._peer_variables(lease), lease.attrs.backend_data or "", None)]

    @staticmethod
    def _peer_variables(lease):
        return {"SUBNET": cidr(lease.subnet), "PUBLIC_IP": lease.attrs.public_ip}

    def _queue(self, key, purpose, variables, data, failed):
        """Queue command `key` (its failure calls `failed()` under the lock); its Change."""
        argv, timeout = split_command(self.lines[key]), self.timeout

        def job():
            result = commands.run(argv, variables, data + "\n", timeout)
            problem = commands.failure(result, timeout)
            if problem is None:
                output = commands.shorten(result.stdout + " " + result.stderr)
                self.log.info("ran %s %s in %.2f s%s", key, purpose, result.seconds,
                              ": " + output if output else "")
                return
            self.log.error("%s %s failed: %s%s", key, purpose, problem,
                           "; it runs again at the next reconcile" if failed else "")
            if failed:
                with self._lock:
                    failed()

        self.queue.put(job)
        return Change(COMMAND, "queued", "%s %s" % (key, purpose))

    # -- stopping --------------------------------------------------------------------------------

    def teardown(self, successor=None):
        """Queue the remove command of every peer and wait for them (at most CommandTimeout s in
        all). Not when `successor` is an extension backend too (the config's commands changed):
        it already ran its add commands, which the old remove commands would undo. What the
        start-up commands made stays: v0.10 has no command to undo it. Returns the changes."""
        if isinstance(successor, ExtensionBackend):
            with self._lock:
                self._peers = {}
            return []
        with self._lock:
            changes = []
            for key in sorted(self._peers):
                changes.extend(self._remove(key))
        left = self.queue.drain(self.timeout)
        if left:
            self.log.warning("%d extension command%s still queued or running after %d s; they go on in the "
                             "background", left, "" if left == 1 else "s", self.timeout)
        return changes

    def close(self):
        """Take no more commands (those queued still run); the data plane stays."""
        self.queue.close()
        super().close()
