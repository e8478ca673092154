"""When the wireguard backend's opening end (see wireguard.py) opens a session with a peer again:
WireGuard keeps no idle session, and a pair whose sessions both expired handshakes at the first
packet, from both ends at once when both send at once (the crossing wireguard.py describes).

WireGuard's timers (the protocol's, the same in the kernel and wireguard-go): a session's keys
are refused 180 s after its handshake (REJECT_AFTER_TIME). Only the end that initiated the
session's handshake renews it: when it sends past 120 s (REKEY_AFTER_TIME) and when it receives
past 165 s (REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT). Which end that is the device
does not say, so the opener sends one keepalive (open_session) RENEW_AGE after the last handshake,
between 165 and 180 s: as the initiator it sends it and handshakes (past 120 s), as the responder
its keepalive reaches the initiator past 165 s, which handshakes. Either way one end starts one
handshake while both still hold valid keys: the pair never reaches 180 s with no session, so no
first packets can cross. A session with no handshake yet, or one that expired anyway, is opened
by the same keepalive (then the opener handshakes: it has no keys), again RETRY_AFTER later while
no handshake follows (WireGuard itself retries a handshake for 90 s, REKEY_ATTEMPT_TIME).

The times here are unix times, as the device reports its last handshake.
"""

import time

REJECT_AFTER_TIME = 180
LAST_MINUTE_AGE = REJECT_AFTER_TIME - 10 - 5  # past it a receiving initiator handshakes
# Past the last-minute age even though the device reports whole seconds (3 s: the handshake may
# be up to 1 s older than it says), and 12 s before the keys are refused: the loop may be late.
RENEW_AGE = LAST_MINUTE_AGE + 3
RETRY_AFTER = 120  # after WireGuard's own 90 s of handshake retries


def reopen_at(last_handshake, opened_at):
    """The unix time at which the opener opens the session again: RENEW_AGE after the last
    handshake (0: none), or RETRY_AFTER after the last opening (0: none) when no handshake
    followed it. Always later than `opened_at`, so an opening is never repeated at once."""
    if last_handshake + RENEW_AGE > opened_at:
        return last_handshake + RENEW_AGE
    return opened_at + RETRY_AFTER


class SessionTimer:
    """The opener's sessions: the last handshake read from the device and the last opening, per
    peer public key; which are due and when the next one is."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self._handshakes = {}
        self._opened = {}

    def opened(self, public_key):
        # Whole seconds, as the device's last handshake: one in the same second answers it.
        self._opened[public_key] = int(self.clock())

    def read(self, handshakes):
        """The device's {public key: last handshake} (unix time, 0 none)."""
        self._handshakes = dict(handshakes)

    def due_in(self, public_keys):
        """Seconds until the first of `public_keys` is due (<= 0: due now), None for none."""
        times = [self._reopen_at(key) for key in public_keys]
        return min(times) - self.clock() if times else None

    def due(self, public_keys):
        """Those of `public_keys` due now, in order."""
        now = self.clock()
        return [key for key in sorted(public_keys) if self._reopen_at(key) <= now]

    def unanswered(self, public_key):
        """Whether the peer's last opening was followed by no handshake."""
        return self._opened.get(public_key, 0) > self._handshakes.get(public_key, 0)

    def forget(self, keep):
        """Drop the peers not in `keep` (removed)."""
        for table in (self._handshakes, self._opened):
            for key in [key for key in table if key not in keep]:
                del table[key]

    def _reopen_at(self, public_key):
        return reopen_at(self._handshakes.get(public_key, 0), self._opened.get(public_key, 0))
