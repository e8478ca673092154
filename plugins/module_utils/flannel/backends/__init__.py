"""The agent's data-plane backends, registered by name in BACKENDS; make_backend builds the one a
network config names.

This module imports no backend (nor pyroute2): config.py reads the table to validate configs in
the Ansible modules too. docs/architecture.md lists what a new backend provides and where else it
plugs in.
"""

import collections
import importlib

# module: the module of this package defining the backend class `class_name`; config_keys: the
# keys of the network config's Backend object this type accepts ("Type" first).
BackendEntry = collections.namedtuple("BackendEntry", "module class_name config_keys")

BACKENDS = collections.OrderedDict([  # in the order messages list them
    ("vxlan", BackendEntry("vxlan", "VxlanBackend", ("Type", "VNI", "Port", "GBP", "DirectRouting", "MTU"))),
    ("host-gw", BackendEntry("host_gw", "HostGwBackend", ("Type",))),
    ("udp", BackendEntry("udp", "UdpBackend", ("Type", "Port"))),
    ("wireguard", BackendEntry("wireguard", "WireguardBackend",
                               ("Type", "PSK", "ListenPort", "MTU", "PersistentKeepaliveInterval"))),
    ("extension", BackendEntry("extension", "ExtensionBackend",
                               ("Type", "PreStartupCommand", "PostStartupCommand", "SubnetAddCommand",
                                "SubnetRemoveCommand", "CommandTimeout"))),
    ("alloc", BackendEntry("alloc", "AllocBackend", ("Type",))),
])

# The agent flags that backends read (each backend's create() takes them): the config follower is
# given these, not the whole command line. A backend flag of cli.py gets a field here.
# public_ipv6: -public-ipv6, the address a dual-stack host-gw or IPv6-underlay vxlan backend uses.
BackendFlags = collections.namedtuple("BackendFlags", "vxlan_offload public_ipv6", defaults=("",))


def backend_flags(options):
    """The BackendFlags of the agent's parsed command line."""
    return BackendFlags(options.vxlan_offload, getattr(options, "public_ipv6", ""))


def backend_class(type_name):
    """The class of backend `type_name`; ValueError naming the known types for any other."""
    entry = BACKENDS.get(type_name)
    if entry is None:
        raise ValueError("unknown backend type %r; the known ones: %s" % (type_name, ", ".join(BACKENDS)))
    return getattr(importlib.import_module("." + entry.module, __name__), entry.class_name)


def make_backend(config, iface, public_ip, flags):
    """The backend `config` names, for the external interface `iface`; its setup() starts it.
    Raises BackendError for a type that is not in BACKENDS."""
    try:
        cls = backend_class(config.backend.type)
    except ValueError as error:
        from .base import BackendError

        raise BackendError(str(error))
    return cls.create(config, iface, public_ip, flags)
