"""What the registries (v2.py, v3.py) raise, and the words they say it with."""

from ..etcd_http import excerpt


class RegistryError(Exception):
    """etcd answered something this code cannot use, or could not be reached."""


class RegistryUnavailable(RegistryError):
    """No endpoint answered."""


class RegistryAuthError(RegistryUnavailable):
    """etcd refused the credentials (wrong user or password, or no permission on the prefix).
    Retried like an outage: an operator may fix the user while the agent waits."""


class RegistryBadReply(RegistryError):
    """etcd's reply could not be used: over the size limit, endless, stalled, cut short, not JSON
    or not the shape etcd gives. Retried with backoff: another try may be answered properly."""


class ConfigMissing(RegistryError):
    """There is no <prefix>/config key."""


class IndexCleared(RegistryError):
    """The watch fell behind etcd's event history (or the subnets dir went away): re-list."""


# Not fixed by a quick retry: credentials wait for a person, and a misbehaving etcd is not hammered.
BACKED_OFF_ERRORS = (RegistryAuthError, RegistryBadReply)


def _root_cause(error):
    """The innermost reason of a python-etcd/urllib3 connection error, in a few words."""
    cause = getattr(error, "cause", None) or error
    reason = getattr(cause, "reason", None) or cause
    text = str(reason)
    # urllib3 wraps "[Errno 111] Connection refused" in object reprs; keep the errno part.
    if "] " in text and "[Errno" in text:
        text = text[text.index("[Errno"):].split(")", 1)[0].rstrip("'\"")
    return excerpt(text)
