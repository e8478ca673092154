"""The v3 registry's watch: one streaming /v3/watch reply (read by etcd_http.LineStream within the
reply limits), its messages turned into etcd's events or the registry's errors.

Every message's header names the cluster and its current revision. etcd re-formed behind the same
URLs (another cluster ID: the etcd role's new cluster when the membership changes), or restored or
emptied (its revision below the one the watch resumes from), answers a watch from a revision it has
not reached with silence until it reaches it: both are IndexCleared, so that the agent re-lists."""

import collections
import time

from ..etcd_http import BadReply, StreamEnded, checked_v3_kv, excerpt, json_object
from .errors import IndexCleared, RegistryBadReply, RegistryError, RegistryUnavailable


class WatchStream:
    """One /v3/watch response: its messages (one JSON object a line, read by LineStream within the
    reply limits) turned into events."""

    def __init__(self, lines, watched, position, error_for, cluster_id=None):
        self.lines = lines
        self._error_for = error_for  # etcd's reason -> the RegistryError to raise
        self.watched = watched
        self.position = position  # revision of the last event handed out
        self.cluster_id = cluster_id  # the cluster `position` is a revision of (None: the first one heard)
        self.dead = False
        self._pending = collections.deque()

    def _message(self, timeout):
        """The next message's result (a dict, its events checked), or None after `timeout` s
        without one."""
        try:
            line = self.lines.next_line(timeout)
            if line is None:
                return None
            message = json_object(line, self.lines.source)
            if "error" in message:
                raise self._error_for(excerpt(message["error"]))
            result = message.get("result") or {}
            for event in result.get("events") or []:
                checked_v3_kv(event.get("kv"))
            int(result.get("compact_revision", 0) or 0)
            self._check_header(result.get("header") or {})
            return result
        except StreamEnded as err:
            self.dead = True
            raise RegistryUnavailable(str(err))
        except BadReply as err:
            self.dead = True
            raise RegistryBadReply(str(err))
        except (TypeError, AttributeError, ValueError, KeyError):
            self.dead = True
            raise RegistryBadReply(str(BadReply(self.lines.source, "wrong shape: a watch message is not etcd's")))
        except RegistryError:
            self.dead = True
            raise

    def next_event(self, timeout):
        """The next event (a dict), or None after `timeout` s without one."""
        deadline = time.monotonic() + timeout
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            result = self._message(remaining)
            if result is None:
                return None
            compacted = int(result.get("compact_revision", 0) or 0)
            if compacted:
                self.dead = True
                raise IndexCleared("etcd compacted its history to revision %d, past %d"
                                   % (compacted, self.position + 1))
            if result.get("canceled"):
                self.dead = True
                raise self._error_for("etcd canceled the watch: %s"
                                      % excerpt(result.get("cancel_reason", "no reason")))
            self._pending.extend(result.get("events") or ())
        return self._pending.popleft()

    def _check_header(self, header):
        """IndexCleared when the message comes from another cluster, or from a store whose revision
        is below the last one handed out."""
        cluster_id = header.get("cluster_id")
        if cluster_id and self.cluster_id is None:
            self.cluster_id = cluster_id
        elif cluster_id and cluster_id != self.cluster_id:
            self.dead = True
            raise IndexCleared("etcd at %s is another cluster now (ID %s, was %s: re-formed on the same URLs?)"
                               % (self.lines.source, excerpt(cluster_id), self.cluster_id))
        revision = int(header.get("revision", 0) or 0)
        if revision and revision < self.position:
            self.dead = True
            raise IndexCleared("etcd at %s is at revision %d, below %d already seen (restored or emptied?)"
                               % (self.lines.source, revision, self.position))

    def close(self):
        self.dead = True
        self.lines.close()
