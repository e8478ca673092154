"""The agent's answer to every catchable signal but the three run_agent (daemon.py) sets itself
(SIGTERM and SIGINT stop, SIGHUP resyncs): acted on, or logged and ignored.

Acted on: SIGQUIT stops, as SIGTERM does. Left alone: the faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
SIGSYS, SIGTRAP), which must end a faulting process (an ignored one re-runs the faulting
instruction forever), and SIGCHLD, SIGCONT, SIGURG and SIGWINCH, which the kernel ignores by
default (SIGCHLD comes with every iptables run). Ignored without a line: SIGPIPE (Python's own
setting: the kernel raises it at every write to a closed socket, such as a /healthz client gone
away, and the write's EPIPE error is what the code acts on), SIGTTIN and SIGTTOU (writing the
line to a terminal would raise them again). Every other one is logged and ignored: a stray
`kill -USR1` must not end the agent that keeps a host's overlay running.
"""

import signal
import time

LOGGED_AND_IGNORED = ("SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGIO", "SIGPWR",
                      "SIGSTKFLT", "SIGXCPU", "SIGXFSZ", "SIGTSTP")


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:  # the real-time signals between SIGRTMIN and SIGRTMAX have no name of their own
        return "SIGRTMIN+%d" % (number - signal.SIGRTMIN)


def handle_other_signals(stop, log):
    """Install the handlers for the signals run_agent does not set itself (see LOGGED_AND_IGNORED).
    A signal's line is written at most once a second: a flood of signals cannot flood the log."""
    logged_at = {}

    def ignored(number, _frame):
        now = time.monotonic()
        if number not in logged_at or now - logged_at[number] >= 1.0:
            logged_at[number] = now
            log.warning("%s received: ignored (SIGTERM, SIGINT or SIGQUIT stop the agent, SIGHUP resyncs)",
                        _signal_name(number))

    def quit_signal(number, frame):
        log.info("SIGQUIT received: stopping, as for SIGTERM")
        stop(number, frame)

    numbers = [getattr(signal, name) for name in LOGGED_AND_IGNORED if hasattr(signal, name)]
    numbers += list(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))
    for number in numbers:
        signal.signal(number, ignored)
    signal.signal(signal.SIGQUIT, quit_signal)
    for name in ("SIGPIPE", "SIGTTIN", "SIGTTOU"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
