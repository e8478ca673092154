"""What the agent changed on the host, as typed records.

A Change is the log line the agent writes for one change (it is a str, so logs, tests and callers
that join or compare lines see the text they always saw) and carries what the line is about:
`kind` (the kind of object), `action` (the verb) and `what` (the object, as the line names it).
Metrics count changes by kind without reading the text.
"""

# Kinds of object. DEVICE covers a backend's device itself (created, removed, MTU, MAC, state,
# offload); ADDRESS an address on it; WORKER a forwarding process of the udp backend; COMMAND a
# command of the extension backend (run, or queued to run).
ROUTE = "route"
NEIGHBOUR = "neighbour"
FDB = "fdb"
DEVICE = "device"
ADDRESS = "address"
WORKER = "worker"
SUBNET_ENV = "subnet_env"
MASQUERADE = "masquerade"
PEER = "peer"  # a peer of the wireguard backend's device (its key, endpoint and allowed IPs)
COMMAND = "command"
KINDS = (ROUTE, NEIGHBOUR, FDB, DEVICE, ADDRESS, WORKER, SUBNET_ENV, MASQUERADE, PEER, COMMAND)


class Change(str):
    """One change: its log text, with `kind`, `action` and `what`. The text is
    '<action> <what>' unless `text` gives another wording. repr() is the text's, as before."""

    def __new__(cls, kind, action, what, text=None):
        if kind not in KINDS:
            raise ValueError("unknown change kind %r (known: %s)" % (kind, ", ".join(KINDS)))
        change = str.__new__(cls, text if text is not None else "%s %s" % (action, what))
        change.kind = kind
        change.action = action
        change.what = what
        return change

    def __reduce__(self):  # pickle/copy keep the record, not only the text
        return (Change, (self.kind, self.action, self.what, str(self)))
