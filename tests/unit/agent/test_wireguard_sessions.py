"""When the wireguard backend's opening end opens a session again (backends/wireguard_sessions.py):
pure timer logic against WireGuard's own timers, on a simulated clock; the backend's upkeep() on
a device that only answers its last handshakes (the real device: tests/agent/test_wireguard_backend.py)."""

import logging

import pytest

from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.wireguard import WireguardBackend
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.wireguard_device import (
    DeviceError, DeviceState, WgPeer)
from ansible_collections.netlab.flannel.plugins.module_utils.flannel.backends.wireguard_sessions import (
    LAST_MINUTE_AGE, REJECT_AFTER_TIME, RENEW_AGE, RETRY_AFTER, SessionTimer, reopen_at)

KEY, OTHER = "A" * 43 + "=", "B" * 43 + "="


class Clock:
    def __init__(self, now=1000000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_renewed_after_the_initiators_last_minute_age_and_before_the_keys_are_refused():
    """Past 165 s a receiving initiator handshakes, past 120 s a sending one: one keepalive from
    this end then renews the session whichever end initiated it, before 180 s."""
    assert LAST_MINUTE_AGE == 165 and LAST_MINUTE_AGE < RENEW_AGE < REJECT_AFTER_TIME
    assert reopen_at(5000, 4000) == 5000 + RENEW_AGE  # opened, then a handshake: its age decides
    assert reopen_at(5000, 5000) == 5000 + RENEW_AGE  # a handshake in the second it was opened answers it


def test_a_session_never_opened_is_due_at_once_and_an_unanswered_opening_is_retried_later():
    assert reopen_at(0, 0) <= 1000000.0
    assert reopen_at(0, 1000000) == 1000000 + RETRY_AFTER
    assert reopen_at(5000, 5000 + RENEW_AGE) == 5000 + RENEW_AGE + RETRY_AFTER  # no handshake followed it


@pytest.mark.parametrize("last_handshake", [0, 1, 5000, 999830, 1000000])
@pytest.mark.parametrize("late", [0, 1, 9, 500])
def test_an_opening_when_due_is_never_due_again_at_once(last_handshake, late):
    opened = 0
    for _turn in range(5):
        due = max(reopen_at(last_handshake, opened), 1000000)
        opened = int(due + late)
        assert reopen_at(last_handshake, opened) > opened


def _idle_hour(loop_late, answered=True):
    """An idle pair for an hour: the loop runs the timer `loop_late` s after it is due, an opening
    makes a handshake at once when `answered`. Returns (openings, handshake times)."""
    clock = Clock()
    timer = SessionTimer(clock)
    handshakes, openings = [clock.now - 1], 0
    end = clock.now + 3600
    while True:
        clock.now += max(timer.due_in([KEY]), 0) + loop_late
        if clock.now >= end:
            return openings, handshakes
        timer.read({KEY: handshakes[-1]})
        for _key in timer.due([KEY]):
            timer.opened(KEY)
            openings += 1
            if answered:
                handshakes.append(int(clock.now))


@pytest.mark.parametrize("loop_late", [0.0, 0.3, 4.0, 11.0])
def test_an_idle_session_is_renewed_before_it_expires_even_when_the_loop_is_late(loop_late):
    openings, handshakes = _idle_hour(loop_late)
    gaps = [later - earlier for earlier, later in zip(handshakes, handshakes[1:])]
    assert openings == len(gaps) >= 3600 // REJECT_AFTER_TIME
    assert all(LAST_MINUTE_AGE + 1 < gap < REJECT_AFTER_TIME for gap in gaps)


def test_an_idle_pair_handshakes_21_times_an_hour():
    openings, _handshakes = _idle_hour(0.0)
    assert openings == 3600 // RENEW_AGE == 21


def test_an_unanswered_peer_is_opened_again_every_retry_period():
    openings, handshakes = _idle_hour(0.0, answered=False)
    assert len(handshakes) == 1 and openings == 1 + (3600 - RENEW_AGE) // RETRY_AFTER


def test_the_timer_names_the_peers_due_and_forgets_removed_ones():
    clock = Clock()
    timer = SessionTimer(clock)
    assert timer.due_in([]) is None
    timer.read({KEY: int(clock.now) - 100, OTHER: int(clock.now) - 175})
    assert timer.due([KEY, OTHER]) == [OTHER] and timer.due_in([KEY, OTHER]) == RENEW_AGE - 175
    timer.opened(OTHER)
    assert timer.unanswered(OTHER) and timer.due([KEY, OTHER]) == [] and timer.due_in([KEY, OTHER]) == RENEW_AGE - 100
    timer.read({KEY: int(clock.now) - 100, OTHER: int(clock.now)})
    assert not timer.unanswered(OTHER) and timer.due_in([OTHER]) == RENEW_AGE
    timer.forget([KEY])
    assert timer.due([OTHER]) == [OTHER] and not timer.unanswered(OTHER)  # as never seen


class FakeDevice:
    """A WireGuard device's answers: last handshakes; records the sessions opened."""

    def __init__(self, handshakes):
        self.handshakes, self.opened, self.broken = handshakes, [], False

    def state(self):
        if self.broken:
            raise DeviceError("cannot talk to wireguard-go")
        return DeviceState(None, 51820, {}, dict(self.handshakes))

    def open_session(self, public_key, keepalive):
        self.state()
        self.opened.append((public_key, keepalive))


def _backend(clock, device, peers):
    """A WireguardBackend's session upkeep alone (its device, key, peers and timer): no netlink."""
    backend = WireguardBackend.__new__(WireguardBackend)
    backend.log = logging.getLogger("flannel.backend.wireguard")
    backend.public_key, backend.device, backend._sessions = "M" + "A" * 42 + "=", device, SessionTimer(clock)
    backend._silent = set()
    backend._peers = dict(("10.%d.0.0/20" % (10 + number), peer) for number, peer in enumerate(peers))
    return backend


def test_upkeep_opens_only_the_due_sessions_this_end_opens_and_never_spins_on_a_silent_device():
    clock = Clock()
    now = int(clock.now)
    opened, later, kept = ("Z%s=" % (letter * 42) for letter in "BCE")
    theirs = "A" * 43 + "="  # sorts before this end's key: that end opens the session
    peers = [WgPeer(opened, "192.0.2.1:51820", ("10.10.0.0/20",), 0, None),
             WgPeer(later, "192.0.2.2:51820", ("10.11.0.0/20",), 0, None),
             WgPeer(theirs, "192.0.2.3:51820", ("10.12.0.0/20",), 0, None),
             WgPeer(kept, "192.0.2.4:51820", ("10.13.0.0/20",), 25, None)]  # the user's keepalive keeps it
    device = FakeDevice({opened: now - RENEW_AGE, later: now - 60, theirs: now - 900, kept: now - 900})
    backend = _backend(clock, device, peers)
    assert backend.upkeep_in() <= 0  # nothing read from the device yet
    backend.upkeep()
    assert device.opened == [(opened, 0)] and backend.upkeep_in() == RENEW_AGE - 60
    clock.now += RENEW_AGE - 60
    device.broken = True  # `later` is due but the device does not answer: not tried again at once
    backend.upkeep()
    assert device.opened == [(opened, 0)] and backend.upkeep_in() == RETRY_AFTER - (RENEW_AGE - 60)


def test_a_peer_that_never_answers_is_opened_every_retry_period_and_said_once(caplog):
    clock = Clock()
    gone = "Z" + "B" * 42 + "="
    device = FakeDevice({gone: int(clock.now) - 1000})
    backend = _backend(clock, device, [WgPeer(gone, "192.0.2.1:51820", ("10.10.0.0/20",), 0, None)])
    caplog.set_level("DEBUG", logger="flannel.backend.wireguard")
    for _turn in range(4):
        backend.upkeep()
        assert backend.upkeep_in() == RETRY_AFTER
        clock.now += RETRY_AFTER
    assert device.opened == [(gone, 0)] * 4
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == ["wireguard: no handshake with peer %s since this end last opened the session; "
                        "opening it again every %d s until it answers" % (gone, RETRY_AFTER)]
    device.handshakes[gone] = int(clock.now)  # it answered at last: said again if it goes silent
    backend.upkeep()
    assert gone not in backend._silent
