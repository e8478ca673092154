# Copyright: (c) 2026, netlab.flannel contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What systemd passes to a service unchanged, and how a value is written in an EnvironmentFile.

The one place of both rules: the filters systemd_env_value (the flanneld role's environment file)
and systemd_carry_problems (the role's refusal, before any change) use them.
"""

from __future__ import annotations

_NAMED = {"\x00": "a NUL character", "\n": "a newline", "\r": "a carriage return"}


def carry_problem(value):
    """Why systemd cannot hand `value` to a service unchanged, or None.

    A NUL ends a C string; a newline or carriage return ends a line of the unit or of the
    environment file (unquoted); systemd releases differ on other control characters (older ones
    drop the whole variable when its value holds one, tab excepted), and every release drops a
    value that is not UTF-8. Refusing them all keeps what the agent receives independent of the
    host's systemd.
    """
    text = str(value)
    for char in text:
        if (char < " " and char != "\t") or char == "\x7f":
            name = _NAMED.get(char, "the control character U+%04X" % ord(char))
            return "holds %s, which systemd cannot pass to the agent unchanged" % name
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 text, which systemd cannot pass to the agent"
    return None


def env_file_value(value):
    """`value` double-quoted for an EnvironmentFile= line: systemd reads back exactly `value`.

    In an environment file systemd expands neither $ nor % (Environment= in a unit does %), keeps
    everything between double quotes (edge spaces, # and ;, single quotes) and takes a backslash
    followed by " or \\ as that character: only those two are escaped. Raises ValueError for a
    value carry_problem refuses.
    """
    problem = carry_problem(value)
    if problem:
        raise ValueError(problem)
    return '"%s"' % str(value).replace("\\", "\\\\").replace('"', '\\"')
