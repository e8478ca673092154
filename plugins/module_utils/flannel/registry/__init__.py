"""etcd access in flannel's layout: <prefix>/config and <prefix>/subnets/A.B.C.D-LEN, the only code
that talks to etcd (the agent and the modules use it; the action plugin reaches etcd through the
modules).

- base.py: the keys, the operations, and what a listing or a watched change means (written once);
- v2.py: etcd's v2 API (flanneld v0.10's, the default), on python-etcd, but for its watch (v2_watch.py);
- v3.py: etcd's v3 API, on its JSON gateway with urllib3 only (v3_gateway.py, v3_watch.py);
- errors.py: what they raise.

make_registry imports the one API asked for, so an agent on v3 never loads python-etcd.
"""

from .base import (DEFAULT_ENDPOINTS, DEFAULT_PREFIX, ConfigEvent, LeaseEvent, LeaseListing, Registry,
                   UnreadableKeyRemoved, names_another_key, parse_endpoints, subnets_of_key)
from .errors import (BACKED_OFF_ERRORS, ConfigMissing, IndexCleared, RegistryAuthError, RegistryBadReply,
                     RegistryError, RegistryUnavailable)

__all__ = ["BACKED_OFF_ERRORS", "DEFAULT_ENDPOINTS", "DEFAULT_PREFIX", "ETCD_APIS", "ConfigEvent", "ConfigMissing",
           "IndexCleared", "LeaseEvent", "LeaseListing", "Registry", "RegistryAuthError", "RegistryBadReply",
           "RegistryError", "RegistryUnavailable", "UnreadableKeyRemoved", "make_registry", "names_another_key",
           "parse_endpoints", "subnets_of_key"]

# The etcd APIs a registry speaks: v2 (flanneld v0.10's, the default) and v3.
ETCD_APIS = ("v2", "v3")


def make_registry(api="v2", **options):
    """The registry of etcd API `api` (v2 or v3), built from the keyword options of its class
    (endpoints, prefix, ca_file, cert_file, key_file, username, password, timeout)."""
    if api == "v3":
        from .v3 import EtcdV3Registry

        return EtcdV3Registry(**options)
    if api != "v2":
        raise ValueError("etcd API %r must be one of %s" % (api, ", ".join(ETCD_APIS)))
    from .v2 import EtcdRegistry

    return EtcdRegistry(**options)
