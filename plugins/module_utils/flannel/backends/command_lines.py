"""A command line of the extension backend's config, split into the words it runs as.

No shell runs a command unless its line names one: `ip route replace $SUBNET ...` would reach `ip`
with a literal `$SUBNET`, so the config check refuses shell syntax in a command that does not
start a shell and says how to ask for one (`sh -c '...'`). flanneld v0.10 runs every line with
`sh -c`; a line that starts a shell itself runs the same under both agents.

The config check and the extension backend split lines here alike. This module imports only what
splitting needs (commands.py runs them), so that agents on other backends and the Ansible modules
load nothing more: subprocess alone costs about 0.4 MB of RSS.
"""

import os
import re
import shlex

SHELLS = frozenset(("sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "busybox"))
# Whole words a shell reads as control operators or redirections: `;`, `&&`, `|`, `2>&1`, `>file`.
_OPERATOR = re.compile(r"^(?:;;?|&&?|\|\|?|[0-9]*(?:<<?|>>?)(?:&[0-9-]?)?.*)$")
_EXPANSION = re.compile(r"\$[A-Za-z_{(]|`")


def split_command(text):
    """The argument vector of a command line, split into words as a POSIX shell splits them
    (quotes, backslashes) but not run by one; ValueError says why the line cannot run so."""
    try:
        words = shlex.split(text)
    except ValueError as error:  # "No closing quotation", "No escaped character"
        raise ValueError("%s cannot be split into words: %s" % (shlex.quote(text), str(error).lower()))
    if not words:
        raise ValueError("%s has no command" % shlex.quote(text))
    for word in words:
        if os.path.basename(word) in SHELLS:
            break  # the rest is the shell's to read
        if _OPERATOR.match(word) or word.endswith(";") or _EXPANSION.search(word):
            raise ValueError("%s is shell syntax, but the command runs without a shell; to have a shell "
                             "read it, write: sh -c %s" % (shlex.quote(word), shlex.quote(text)))
    return words
