"""/run/flannel/subnet.env: the file Docker (and mk-docker-opts.sh users) read the lease from."""

import os
import tempfile

try:
    from netaddr import IPNetwork
except ImportError:  # reported by the caller through missing_libraries()
    IPNetwork = None

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"


def render_subnet_env(network, subnet, mtu, ipmasq, ipv6_network=None, ipv6_subnet=None):
    """flanneld's four lines; FLANNEL_SUBNET is the lease's first host address with its prefix.
    On a dual-stack network FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET (likewise) follow
    FLANNEL_SUBNET, where modern flanneld writes them."""
    ipv6 = ""
    if ipv6_subnet is not None:
        ipv6 = "FLANNEL_IPV6_NETWORK=%s\nFLANNEL_IPV6_SUBNET=%s/%d\n" % (
            ipv6_network.cidr, ipv6_subnet.network + 1, ipv6_subnet.prefixlen)
    return ("FLANNEL_NETWORK=%s\nFLANNEL_SUBNET=%s/%d\n%sFLANNEL_MTU=%d\nFLANNEL_IPMASQ=%s\n"
            % (network.cidr, subnet.network + 1, subnet.prefixlen, ipv6, mtu, "true" if ipmasq else "false"))


def parse_subnet_env(text):
    """KEY=VALUE lines (comments, blanks, quotes and 'export' tolerated) -> dict."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export "):].strip()
        values[key] = value.strip().strip("'\"")
    return values


def read_subnet_env(path=DEFAULT_SUBNET_FILE):
    """The file's values, or {} when it does not exist."""
    try:
        with open(path) as handle:
            return parse_subnet_env(handle.read())
    except (IOError, OSError):
        return {}


def _subnet_of(value, version):
    try:
        subnet = IPNetwork(value, flags=0).cidr if value else None
    except Exception:
        return None
    return subnet if subnet is not None and subnet.version == version else None


def previous_subnet(path=DEFAULT_SUBNET_FILE):
    """The subnet a previous run leased (FLANNEL_SUBNET masked to its network), or None."""
    return _subnet_of(read_subnet_env(path).get("FLANNEL_SUBNET"), 4)


def previous_subnets(path=DEFAULT_SUBNET_FILE):
    """(IPv4 subnet, IPv6 subnet) a previous run leased (FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET),
    each None when not there."""
    values = read_subnet_env(path)
    return _subnet_of(values.get("FLANNEL_SUBNET"), 4), _subnet_of(values.get("FLANNEL_IPV6_SUBNET"), 6)


def write_subnet_env(path, content):
    """Write atomically (temp file in the same dir, then rename); True when the content changed."""
    try:
        with open(path) as handle:
            if handle.read() == content:
                return False
    except (IOError, OSError):
        pass
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    handle, temp_path = tempfile.mkstemp(prefix=".subnet.env.", dir=directory)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(content)
        os.chmod(temp_path, 0o644)
        os.rename(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        raise
    return True
