"""A narrower import path for the agent process (the zipapp's entry point applies it; the
Ansible modules and the tests import the libraries as usual).

Measured in BENCHMARKS.md (Memory): each step keeps a library from loading what the agent never
uses.
- pyroute2's package __init__ imports every API it has (NDB, IPDB, conntrack, nftables, wireless
  ...); the agent needs IPRoute, NetlinkError and ethtool. The package is registered without
  running its __init__, so its submodules still import, and those two names resolve on first use.
- python-etcd imports dns.resolver for SRV discovery of the cluster, which the agent never asks
  for (it takes -etcd-endpoints): a stand-in loads dnspython only if anything uses it.
- python-etcd injects pyOpenSSL into urllib3 when it is installed on the host (for SNI, which
  Python's ssl has had since 3.2): that would load pyOpenSSL and cryptography. Refused.
- OpenSSL (libcrypto and libssl) is mapped by the first `import ssl` or `import hashlib`, yet an
  agent whose etcd endpoints are all http:// never uses it: then ssl is left out (urllib3,
  http.client and asyncio run without it, as on a Python built without OpenSSL) and hashlib uses
  Python's built-in SHA-256. Any "https" among the flags or FLANNELD_ETCD_ENDPOINTS keeps OpenSSL.
"""

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types

# The names the agent takes from the pyroute2 package itself, and the modules defining them.
PYROUTE2_NAMES = {"IPRoute": "pyroute2.iproute.linux", "NetlinkError": "pyroute2.netlink.exceptions",
                  "NetNS": "pyroute2.iproute.linux"}


def _package_without_init(name, names):
    """Register package `name` without running its __init__; `names` {attribute: module} load on use."""
    spec = importlib.util.find_spec(name)
    if spec is None or name in sys.modules:
        return False
    package = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(name, None, is_package=True))
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin

    def resolve(attribute):
        if attribute not in names:
            raise AttributeError("module %r has no attribute %r (flannel.slim: the agent's pyroute2 "
                                 "import path holds %s)" % (name, attribute, ", ".join(sorted(names))))
        value = getattr(importlib.import_module(names[attribute]), attribute)
        setattr(package, attribute, value)
        return value

    package.__getattr__ = resolve
    sys.modules[name] = package
    return True


def _loaded_on_use(name):
    """Stand in for module `name` until an attribute of it is asked for; then import the real one."""
    if sys.modules.get(name) is not None:
        return
    stand_in = types.ModuleType(name, "stand-in for %s until it is used (flannel.slim)" % name)

    def load(attribute):
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        real = importlib.import_module(name)
        parent, _dot, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, real)
        return getattr(real, attribute)

    stand_in.__getattr__ = load
    parent, _dot, child = name.rpartition(".")
    if parent:
        # `import dns.resolver` finds the stand-in in sys.modules and binds `dns`, so the package
        # must hold it too.
        setattr(importlib.import_module(parent), child, stand_in)
    sys.modules[name] = stand_in


def tls_wanted(argv, environ):
    """Whether the agent may talk TLS to etcd: an https endpoint anywhere in its flags or environment."""
    words = list(argv) + [environ.get("FLANNELD_ETCD_ENDPOINTS", "")]
    return any("https" in word.lower() for word in words)


def _without_openssl():
    """Leave ssl and OpenSSL's hashlib out. `ssl` becomes a stand-in that imports the real module
    if anything ever uses it: python-etcd and pyroute2 import it unconditionally and use it only
    for TLS; http.client and urllib.request only define their HTTPS classes with it. urllib3 and
    asyncio read ssl's attributes at import, and run without ssl when it is missing: they are
    imported while it is."""
    sys.modules["_hashlib"] = None
    _loaded_on_use("ssl")
    stand_in = sys.modules["ssl"]
    import http.client  # noqa: F401  (with the stand-in: HTTPSConnection is defined)

    sys.modules["ssl"] = None
    try:
        import asyncio  # noqa: F401
        import urllib3  # noqa: F401
    finally:
        sys.modules["ssl"] = stand_in
    # prometheus_client reads ssl names at import for its own HTTPS servers and push client,
    # which the agent never uses (an annotation and argument defaults): placeholders meanwhile.
    placeholders = {"SSLContext": type("SSLContext", (), {}), "PROTOCOL_TLS_SERVER": None,
                    "PROTOCOL_TLS_CLIENT": None}
    stand_in.__dict__.update(placeholders)
    try:
        import prometheus_client.exposition  # noqa: F401
    finally:
        for name in placeholders:
            delattr(stand_in, name)


STEPS = ("pyopenssl", "pyroute2", "dns", "openssl")
STEPS_VARIABLE = "NETLAB_AGENT_SLIM"  # a comma-separated subset of STEPS, or "none"; default all


def apply(argv=None, environ=None):
    """Apply the steps named in $NETLAB_AGENT_SLIM (all by default); returns those applied."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    wanted = environ.get(STEPS_VARIABLE, ",".join(STEPS))
    steps = [step for step in STEPS if step in wanted.split(",")]
    if "pyopenssl" in steps:
        sys.modules.setdefault("urllib3.contrib.pyopenssl", None)  # an ImportError, which python-etcd expects
    if "pyroute2" in steps:
        _package_without_init("pyroute2", PYROUTE2_NAMES)
    if "dns" in steps:
        _loaded_on_use("dns.resolver")
    if "openssl" in steps and not tls_wanted(argv, environ):
        _without_openssl()
    return steps
