"""What every backend shares (Backend: the config, the external interface, one netlink socket,
this host's addresses), the checks of a peer's lease every backend makes before programming it,
and the Changes of addresses and MTUs. The route-programming backends' base is route_backend.py.
"""

import logging
import socket

from .. import netlink
from ..changes import ADDRESS, DEVICE, Change
from ..lease import cidr
from ..lease_attrs import parsed_address

try:
    from netaddr import IPAddress, IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    IPAddress = IPNetwork = None


def peer_scope_problem(network, own_subnet, own_public_ip, local_addresses, subnet, public_ip):
    """Why no route, neighbour, FDB entry or forwarding entry may be made for a peer with this
    subnet and PublicIP, or None. Every backend asks this, whatever parsed the lease, so that no
    key can steer traffic for prefixes outside the flannel network or for this host's own
    addresses. `local_addresses`: this host's addresses (IPAddress; IPv6 ones are never in an IPv4 subnet)."""
    subnet = cidr(subnet)
    problem = _subnet_problem("", subnet, network, "flannel network", own_subnet, local_addresses)
    if problem:
        return problem
    try:
        gateway = parsed_address(public_ip)
    except Exception:
        return "PublicIP %r is not an IP address" % (public_ip,)
    if gateway.version != 4 or gateway in network:
        return "PublicIP %s is not an IPv4 address outside the flannel network" % public_ip
    if gateway in local_addresses or str(gateway) == own_public_ip:
        return "PublicIP %s is this host's own address" % public_ip
    return None


def ipv6_scope_problem(ipv6_network, own_subnet, own_public_ipv6, local_addresses, subnet, public_ipv6=None):
    """peer_scope_problem for a dual-stack lease's IPv6 side: its IPv6 subnet (and PublicIPv6 when
    the backend sends to it) under the same rules, against the IPv6Network and this host's IPv6
    subnet and addresses; None when it may be routed."""
    subnet = cidr(subnet)
    problem = _subnet_problem("IPv6 ", subnet, ipv6_network, "flannel IPv6 network", own_subnet, local_addresses)
    if problem:
        return problem
    if public_ipv6 is None:
        return None
    gateway = IPAddress(public_ipv6)
    if gateway.version != 6 or gateway in ipv6_network:
        return "PublicIPv6 %s is not an IPv6 address outside the flannel IPv6 network" % public_ipv6
    if gateway in local_addresses or str(gateway) == own_public_ipv6:
        return "PublicIPv6 %s is this host's own address" % public_ipv6
    return None


def _subnet_problem(family, subnet, network, network_name, own_subnet, local_addresses):
    """The subnet rules both families share: inside the network (and of its family), clear of this
    host's own subnet and addresses. `family`: "" or "IPv6 ", as the messages name the subnet."""
    if subnet.version != network.version or subnet not in network:
        return "%ssubnet %s is outside the %s %s" % (family, subnet, network_name, network)
    if own_subnet is not None and (subnet.first <= own_subnet.last and own_subnet.first <= subnet.last):
        return "%ssubnet %s overlaps this host's own %ssubnet %s" % (family, subnet, family, own_subnet)
    # Compared as integers (the version too: IPv6 addresses are never in an IPv4 subnet): an
    # IPNetwork lookup per address cost more at every lease event.
    first, last, version = subnet.first, subnet.last, subnet.version
    own = sorted(address for address in local_addresses if address.version == version and first <= address.value <= last)
    if own:
        return "%ssubnet %s contains this host's address %s" % (family, subnet, own[0])
    return None


def address_change(action, address, device):
    """The Change of an address added to or removed from a device: '<action> address <a/len>
    (to|from) <device>'."""
    what = "address %s %s %s" % (address, "to" if action == "added" else "from", device)
    return Change(ADDRESS, action.split()[0], what, "%s %s" % (action, what))


def mtu_change(index, device, mtu, was, ipr):
    """Set a device's MTU; returns its Change."""
    netlink.set_link_mtu(index, mtu, ipr)
    return Change(DEVICE, "set", "%s mtu %d" % (device, mtu), "set %s mtu %d (was %d)" % (device, mtu, was))


class BackendError(Exception):
    """The backend cannot run with this host's configuration; the message says why."""


class Backend:
    """What every backend shares: the config, the external interface, this host's public IP and
    subnet, one netlink socket for its life, this host's addresses, and warnings said once.

    A backend provides setup(), configure_lease(subnet), sync(peers), add_peer(lease),
    remove_peer(subnet) and teardown(successor); each returns the Changes it made (setup() in
    its dict's "changes"). docs/architecture.md lists the rest of what a new backend needs."""

    backend_type = None
    routes_ipv6 = False  # whether it routes the IPv6 subnets of a dual-stack network (EnableIPv6)

    def __init__(self, config, iface, public_ip, ipr=None):
        self.config = config
        self.iface = netlink.Interface(*iface)
        self.public_ip = str(IPAddress(public_ip))
        self.log = logging.getLogger("flannel.backend." + (self.backend_type or "base"))
        self._own_ipr = ipr is None
        self.ipr = ipr if ipr is not None else netlink.open_ipr()  # one socket for the agent's life
        self.device_name = None  # the backend's device, if it has one (its index: device_index)
        self.device_index = None
        self.subnet = None
        self._warned = set()
        dual_stack = getattr(config, "ipv6", None)
        # The IPv6 side (config_ipv6.SubnetRange) of a dual-stack network this backend routes, else None.
        self.ipv6 = dual_stack if self.routes_ipv6 else None
        self.subnet6 = None  # this host's IPv6 subnet, once known (configure_ipv6_lease)
        self.public_ipv6 = None  # this host's PublicIPv6, for a backend that routes IPv6 (-public-ipv6)
        self._addresses = netlink.LocalAddresses(self.ipr, listen=self._own_ipr, ipv6=self.ipv6 is not None)
        if dual_stack is not None and not self.routes_ipv6:
            self.log.warning("EnableIPv6: IPv6 subnets are leased and written to subnet.env, but the %s backend "
                             "does not route them", self.backend_type)

    @classmethod
    def create(cls, config, iface, public_ip, flags):
        """The backend for the agent's BackendFlags `flags` (make_backend's call)."""
        return cls(config, iface, public_ip)

    def close(self):
        self._addresses.close()
        if self._own_ipr:
            self.ipr.close()

    def upkeep_in(self):
        """Seconds until the backend's own timer wants upkeep() (<= 0: now); None: it has none."""
        return None

    def upkeep(self):
        """The backend's timed work (the wireguard backend's idle sessions), run by the agent's
        loop when upkeep_in() is due; it logs what it does."""

    def announce_to(self, events):
        """`events`: the agent's kernel-events socket (netlink.events.KernelEvents; None: none
        listens), told before each batch of requests what it changes, so that the kernel drops
        the announcements of the backend's own changes instead of waking the repairs for them."""

    def configure_ipv6_lease(self, ipv6_subnet):
        """This host's IPv6 subnet on a dual-stack network (None: none); a backend that routes IPv6
        gives its device an address in it. Returns the changes."""
        self.subnet6 = cidr(ipv6_subnet) if ipv6_subnet is not None else None
        return []

    def _ensure_address(self, wanted, network=None, index=None, name=None):
        """Give the device (or link `index` named `name`) the address `wanted` ('address/len'; None:
        none), removing its other addresses inside `network` (the flannel network by default: an
        old lease's); foreign ones (dhcpcd, APIPA) stay."""
        network = network if network is not None else self.config.network
        index, name = (index, name) if index is not None else (self.device_index, self.device_name)
        changes = []
        extra = (socket.AF_INET6,) if network.version == 6 else ()  # IPv4: the call as it always was
        for address in netlink.addresses_of(index, self.ipr, *extra):
            if address == wanted:
                wanted = None
            elif IPNetwork(address).ip in network:
                netlink.delete_address(index, address, self.ipr)
                changes.append(address_change("removed old", address, name))
        if wanted:
            netlink.add_address(index, wanted, self.ipr)
            changes.append(address_change("added", wanted, name))
        return changes

    def _ensure_up(self):
        return self._ensure_link_up(self.device_index, self.device_name)

    def _ensure_link_up(self, index, name):
        if netlink.link_attributes(index, self.ipr)["state"] == "up":
            return []
        netlink.set_link_up(index, self.ipr)
        return [Change(DEVICE, "set up", name, "set %s up" % name)]

    def _warn_once(self, key, message, *args):
        if key not in self._warned:
            self._warned.add(key)
            self.log.warning(message, *args)
