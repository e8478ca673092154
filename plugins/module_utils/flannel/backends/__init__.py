"""The agent's data-plane backends; make_backend picks the one a network config names."""

import logging

LOG = logging.getLogger("flanneld")


def make_backend(config, iface, public_ip, options):
    """The backend `config` names, for the external interface `iface`; its setup() starts it."""
    if config.backend.type == "vxlan":
        from .vxlan import VxlanBackend

        backend = VxlanBackend(config, iface, public_ip, offload=options.vxlan_offload)
        LOG.info("tx checksum offload on %s: %s (%s)", backend.device_name,
                 "on" if backend.offload else "off", backend.offload_reason)
        return backend
    if config.backend.type == "udp":
        from .udp import UdpBackend

        return UdpBackend(config, iface, public_ip)
    from .host_gw import HostGwBackend

    return HostGwBackend(config, iface, public_ip)
