"""The v3 registry's watch: one streaming /v3/watch reply (read by etcd_http.LineStream within the
reply limits), its messages turned into etcd's events or the registry's errors."""

import collections
import time

from ..etcd_http import BadReply, StreamEnded, checked_v3_kv, excerpt, json_object
from .errors import IndexCleared, RegistryBadReply, RegistryError, RegistryUnavailable


class WatchStream:
    """One /v3/watch response: its messages (one JSON object a line, read by LineStream within the
    reply limits) turned into events."""

    def __init__(self, lines, watched, position, error_for):
        self.lines = lines
        self._error_for = error_for  # etcd's reason -> the RegistryError to raise
        self.watched = watched
        self.position = position  # revision of the last event handed out
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

    def close(self):
        self.dead = True
        self.lines.close()
