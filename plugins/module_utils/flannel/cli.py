"""flanneld's command line: the same flag names, spellings and FLANNELD_* environment variables.

Accepted spellings: -flag=value, -flag value, --flag=value, --flag value; booleans also bare.
A flag given on the command line wins over its FLANNELD_<FLAG> environment variable. As in
flanneld, a variable's value is one value of its flag, never split: FLANNELD_IFACE=eth1,eth2 names
one interface, and FLANNELD_IFACE_REGEX keeps the commas of '^eth[0-9]{1,2}$'.
"""

import collections
import os
import re
import ssl
import sys
import tempfile

from . import VERSION
from .lease import ipv4_unicast_problem, ipv6_unicast_problem
from .registry import ETCD_APIS, parse_endpoints

try:
    from netaddr import IPAddress
except ImportError:  # reported by the agent through missing_libraries()
    IPAddress = None

USAGE_EXIT = 2


class UsageError(Exception):
    """A bad flag or value; printed as one line, exit status 2."""


class Flag(collections.namedtuple("Flag", "name default help kind repeated check default_text from_env")):
    """One flag: its name without dashes, default, help line, value type, whether it may be
    given more than once, an optional check(value) that raises ValueError, the default as -help
    and the README show it when the agent works it out at run time (default_text), and whether a
    FLANNELD_<FLAG> variable sets it."""

    __slots__ = ()

    def __new__(cls, name, default, help_text, kind=str, repeated=False, check=None, default_text=None,
                from_env=True):
        return super().__new__(cls, name, default, help_text, kind, repeated, check, default_text, from_env)

    @property
    def attribute(self):
        return self.name.replace("-", "_")

    @property
    def env_name(self):
        """FLANNELD_<FLAG>, or None for a flag no variable sets."""
        return "FLANNELD_" + self.name.upper().replace("-", "_") if self.from_env else None

    @property
    def shown_default(self):
        """The default as -help and the README's flag table show it ("" when there is none)."""
        if self.default_text is not None:
            return self.default_text
        if self.kind is bool:
            return "true" if self.default else "false"
        return "" if self.default in ("", []) else str(self.default)


def _minutes(value):
    if not 1 <= value <= 1439:
        raise ValueError("must be between 1 and 1439 minutes (under a day), got %d" % value)


def _port(value):
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 (off) and 65535, got %d" % value)


def _positive(value):
    if value <= 0:
        raise ValueError("must be above 0 seconds, got %d" % value)


def _public_ip(value):
    problem = value and ipv4_unicast_problem(value)
    if problem:
        raise ValueError("must be an IPv4 unicast address other hosts reach this one at: %s" % problem)


def _public_ipv6(value):
    problem = value and ipv6_unicast_problem(value)
    if problem:
        raise ValueError("must be an IPv6 unicast address other hosts reach this one at: %s" % problem)


def _listen_ip(value):
    try:
        if IPAddress(value, flags=0).version == 4:
            return
    except Exception:
        pass
    raise ValueError("must be an IPv4 address to listen on, such as 0.0.0.0 or 127.0.0.1")


def _endpoints(value):
    parse_endpoints(value)


def _regex(value):
    try:
        re.compile(value)
    except re.error as err:
        raise ValueError("not a regular expression: %s" % err)


_PREFIX_PATTERN = re.compile(r"^/?([A-Za-z0-9_~-][A-Za-z0-9._~-]*/?)+$")


def _etcd_prefix(value):
    segments = value.strip("/").split("/")
    if not _PREFIX_PATTERN.match(value) or any(segment in (".", "..") for segment in segments):
        raise ValueError("must be a key path of letters, digits and . _ ~ - such as /coreos.com/network")


def _etcd_api(value):
    if value not in ETCD_APIS:
        raise ValueError("must be %s" % " or ".join(ETCD_APIS))


def _offload_choice(value):
    if value not in ("auto", "on", "off"):
        raise ValueError("must be auto, on or off")


FLAGS = [
    Flag("etcd-endpoints", "http://127.0.0.1:2379", "comma-separated list of etcd endpoints",
         check=_endpoints),
    Flag("etcd-prefix", "/coreos.com/network", "etcd prefix of the network config and leases",
         check=_etcd_prefix),
    Flag("etcd-api", "v2", "etcd API of the config and leases: v2 (flanneld v0.10's) or v3 (ours)",
         check=_etcd_api),
    Flag("etcd-cafile", "", "SSL Certificate Authority file used to secure etcd communication"),
    Flag("etcd-certfile", "", "SSL certification file used to secure etcd communication"),
    Flag("etcd-keyfile", "", "SSL key file used to secure etcd communication"),
    Flag("etcd-username", "", "username for BasicAuth to etcd"),
    Flag("etcd-password", "", "password for BasicAuth to etcd"),
    Flag("iface", [], "interface to use (IP or name) for inter-host communication; repeatable",
         repeated=True, default_text="the default route's interface"),
    Flag("iface-regex", [], "regex matched against interface IPs, then names; repeatable",
         repeated=True, check=_regex),
    Flag("public-ip", "", "IP accessible by other nodes for inter-host communication", check=_public_ip,
         default_text="the interface's IP"),
    Flag("public-ipv6", "", "IPv6 address published in a dual-stack lease (PublicIPv6; used with EnableIPv6)",
         check=_public_ipv6),
    Flag("subnet-file", "/run/flannel/subnet.env", "filename where env variables are written"),
    Flag("subnet-lease-renew-margin", 60, "renew the lease this many minutes before it expires",
         kind=int, check=_minutes),
    Flag("ip-masq", False, "set up IP masquerade for traffic leaving the flannel network", kind=bool),
    Flag("healthz-ip", "0.0.0.0", "the IP address for the healthz server to listen on", check=_listen_ip),
    Flag("healthz-port", 0, "the port for the healthz server to listen on (0 disables it)",
         kind=int, check=_port),
    Flag("metrics", True, "serve Prometheus metrics as /metrics on the healthz port (or -metrics-port); "
                          "-metrics=false turns them off", kind=bool),
    Flag("metrics-port", 0, "a port of its own for /metrics on -healthz-ip (0: the healthz port)",
         kind=int, check=_port),
    Flag("reconcile-interval", 300, "seconds between full checks of the data plane, a backstop: entries "
                                    "removed behind the agent's back come back at once on the kernel's "
                                    "notifications", kind=int, check=_positive),
    Flag("repair-on-events", True, "restore at once what the kernel's notifications show removed or changed "
                                   "(routes, neighbours, FDB entries, the device) and follow the interface's MTU; "
                                   "-repair-on-events=false leaves repairs to -reconcile-interval", kind=bool),
    Flag("vxlan-offload", "auto", "tx checksum offload on the vxlan device: auto (on, but off on "
                                  "kernels before 5.7, whose checksums break under NAT), on or off",
         check=_offload_choice),
    Flag("host-id", "", "identity of this host, to detect two hosts using one public IP",
         default_text="/etc/machine-id's content, else the host name"),
    # Commands, not settings: no default to show, and (as in flanneld) no variable.
    Flag("check-flags", False, "check the flags and FLANNELD_* environment as a start would, then exit: "
                               "0 when they are fine, 2 and the error otherwise (reads no file, no etcd)",
         kind=bool, default_text="", from_env=False),
    Flag("version", False, "print the version and exit", kind=bool, default_text="", from_env=False),
    Flag("help", False, "print this help and exit", kind=bool, default_text="", from_env=False),
]
_BY_NAME = dict((flag.name, flag) for flag in FLAGS)
_TRUE = ("1", "t", "true", "yes")
_FALSE = ("0", "f", "false", "no")


class Options:
    """Parsed flags as attributes (etcd_endpoints, iface, ...)."""

    def __init__(self, values):
        self.__dict__.update(values)

    def __repr__(self):
        hidden = ("etcd_password",)
        shown = dict((k, "***" if k in hidden and v else v) for k, v in sorted(self.__dict__.items()))
        return "Options(%s)" % shown


def _convert(flag, raw, from_env):
    source = flag.env_name if from_env else "-" + flag.name
    if flag.kind is bool:
        lowered = raw.lower()
        if lowered not in _TRUE + _FALSE:
            raise UsageError("invalid value %r for %s: must be true or false" % (raw, source))
        return lowered in _TRUE
    if flag.kind is int:
        try:
            value = int(raw)
        except ValueError:
            raise UsageError("invalid value %r for %s: must be a whole number" % (raw, source))
    else:
        value = raw
    if flag.check:
        try:
            flag.check(value)
        except ValueError as err:
            raise UsageError("invalid value %r for %s: %s" % (raw, source, err))
    return value


def _split_argument(argument):
    name = argument.lstrip("-")
    if "=" in name:
        name, value = name.split("=", 1)
        return name, value
    return name, None


def parse_args(argv, environ=None):
    """Flags and environment -> Options; raises UsageError with one readable line."""
    environ = os.environ if environ is None else environ
    given = {}
    position = 0
    while position < len(argv):
        argument = argv[position]
        position += 1
        if not argument.startswith("-") or argument in ("-", "--"):
            raise UsageError("unexpected argument %r: flanneld takes flags only" % argument)
        name, value = _split_argument(argument)
        flag = _BY_NAME.get(name)
        if flag is None:
            raise UsageError("unknown flag -%s (see -help)" % name)
        if value is None:
            if flag.kind is bool:
                value = "true"
            elif position < len(argv):
                value = argv[position]
                position += 1
            else:
                raise UsageError("flag -%s needs a value" % name)
        converted = _convert(flag, value, False)
        if flag.repeated:
            given.setdefault(flag.attribute, []).append(converted)
        else:
            given[flag.attribute] = converted
    values = {}
    for flag in FLAGS:
        if flag.attribute in given:
            values[flag.attribute] = given[flag.attribute]
        elif flag.from_env and environ.get(flag.env_name, "") != "":
            converted = _convert(flag, environ[flag.env_name], True)
            values[flag.attribute] = [converted] if flag.repeated else converted
        else:
            values[flag.attribute] = list(flag.default) if flag.repeated else flag.default
    if values["metrics"] and values["metrics_port"] and values["metrics_port"] == values["healthz_port"]:
        raise UsageError("invalid value %d for -metrics-port: it is the -healthz-port; leave -metrics-port at 0 "
                         "to serve /metrics on the healthz port" % values["metrics_port"])
    return Options(values)


def _readable_file(options, attribute):
    path = getattr(options, attribute)
    if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
        raise UsageError("invalid value %r for -%s: not a readable file" % (path, attribute.replace("_", "-")))


def _check_tls_files(options):
    """Load the TLS files once here as the TLS client will load them, so a wrong file is named
    now, not found as an "etcd unreachable" later. (Only when given: without TLS the agent never
    loads OpenSSL, see slim.py.)"""
    context = ssl.create_default_context()
    try:
        if options.etcd_cafile:
            context.load_verify_locations(cafile=options.etcd_cafile)
    except (ssl.SSLError, ValueError) as err:
        raise UsageError("invalid value %r for -etcd-cafile: not a PEM CA certificate (%s)"
                         % (options.etcd_cafile, err))
    try:
        if options.etcd_certfile:
            context.load_cert_chain(options.etcd_certfile, options.etcd_keyfile or None)
    except (ssl.SSLError, ValueError) as err:
        raise UsageError("invalid value %r for -etcd-certfile/-etcd-keyfile: not a PEM certificate and its "
                         "private key (%s)" % (options.etcd_certfile, err))


def check_files(options):
    """The flags that name files, checked before anything is written anywhere: the TLS files are
    readable, and the subnet file's directory exists (it is made if missing) and takes a new file
    (otherwise the lease would be written to etcd first and left behind)."""
    for attribute in ("etcd_cafile", "etcd_certfile", "etcd_keyfile"):
        _readable_file(options, attribute)
    if options.etcd_keyfile and not options.etcd_certfile:
        raise UsageError("flag -etcd-keyfile needs -etcd-certfile (the certificate of that key)")
    if options.etcd_cafile or options.etcd_certfile:
        _check_tls_files(options)
    path = options.subnet_file
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError("invalid value %r for -subnet-file: it is a directory" % path)
    try:
        os.makedirs(directory, 0o755, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".subnet.env.", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise UsageError("invalid value %r for -subnet-file: cannot write a file in %s: %s"
                         % (path, directory, err.strerror or err))


def usage_text():
    lines = ["usage: flanneld [flags]  (python3 flanneld.pyz [flags])", ""]
    for flag in FLAGS:
        lines.append("  -%s%s" % (flag.name, "" if flag.kind is bool else "=VALUE"))
        shown_default = " (default %s)" % flag.shown_default if flag.shown_default else ""
        environment = "  [env %s]" % flag.env_name if flag.env_name else ""
        lines.append("        %s%s%s" % (flag.help, shown_default, environment))
    return "\n".join(lines) + "\n"


def main(argv=None, environ=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        options = parse_args(argv, environ)
    except UsageError as err:
        sys.stderr.write("flanneld: %s\n" % err)
        return USAGE_EXIT
    # For deployment tools (the flanneld role): the same verdict on the flags a start would give,
    # before the unit is written. The files they name may not be in place yet, so they are not read.
    if options.check_flags:
        return 0
    if options.help:
        sys.stdout.write(usage_text())
        return 0
    if options.version:
        sys.stdout.write("%s\n" % VERSION)
        return 0
    try:
        check_files(options)
    except UsageError as err:
        sys.stderr.write("flanneld: %s\n" % err)
        return USAGE_EXIT
    from .daemon import run_agent

    return run_agent(options)
