"""Reading a network config document: bounded size and nesting, strict JSON (a key given twice
is noticed), keys folded case-insensitively as Go's encoding/json matches them, and how values
read in messages. The rules about what the keys mean are in config.py."""

import json
import re

# A network config is a few hundred bytes, two levels deep (the config and its Backend); the
# bounds leave room for configs written by other tools and stop a huge or deeply nested value
# before it costs memory or recursion.
MAX_CONFIG_BYTES = 64 * 1024
MAX_DEPTH = 8
_MAX_WARNINGS = 10


class ConfigError(ValueError):
    """An invalid network config; `key` names the offending key, `rule` the rule it broke."""

    def __init__(self, key, rule):
        super().__init__("%s: %s" % (key, rule))
        self.key = key
        self.rule = rule

    def under(self, name):
        """The message for a config held in variable `name`: '<name>.<key>: <rule>' ('<name>: ...'
        when the whole document is at fault)."""
        return "%s: %s" % (name if self.key == "config" else "%s.%s" % (name, self.key), self.rule)


def kind(value):
    """How a value reads in JSON/YAML terms (never an internal Python class name)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "a value that is not JSON data"


def shown(value, limit=60):
    """A value as JSON text, quoted so that an empty or blank string is visible; cut when long."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):  # not JSON data, or an integer too long to print
        text = kind(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _key_name(key):
    """A key as written when it reads plainly, else quoted (an empty or odd key stays visible)."""
    return key if re.match(r"[A-Za-z0-9_-]{1,40}\Z", key) else shown(key, limit=40)


def _text_depth(text, limit):
    """How deep objects and arrays nest in JSON text, counted up to limit + 1 without decoding it."""
    depth = deepest = 0
    for token in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif bracket in "]}":
            depth -= 1
    return deepest


def _data_depth(data, limit):
    """How deep dicts and lists nest in decoded data, counted up to limit + 1 (no recursion, so a
    self-referencing structure ends too)."""
    deepest = 0
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep():
    return ConfigError("config", "nests objects and lists more than %d levels deep (a network config "
                                 "needs 2: the config and its Backend)" % MAX_DEPTH)


def _too_big(size):
    return ConfigError("config", "is %d bytes of JSON, above the limit of %d bytes (a network config "
                                 "is a few hundred)" % (size, MAX_CONFIG_BYTES))


class _JSONObject(dict):
    """A decoded JSON object that remembers the keys given more than once (json keeps the last)."""

    repeated = ()


def _object_from_pairs(pairs):
    decoded = _JSONObject(pairs)
    if len(decoded) < len(pairs):
        seen = set()
        decoded.repeated = [key for key, dummy in pairs if key in seen or seen.add(key)]
    return decoded


def check_bounds(data):
    """Refuse a config (JSON text or decoded data) too big or too deeply nested to handle, before
    anything walks it recursively (json, copy.deepcopy, templating)."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    if isinstance(data, str):
        if len(data) > MAX_CONFIG_BYTES:  # characters: a cheap lower bound of the byte count
            raise _too_big(len(data.encode("utf-8", "surrogatepass")))
        size = len(data.encode("utf-8", "surrogatepass"))
        if size > MAX_CONFIG_BYTES:
            raise _too_big(size)
        if _text_depth(data, MAX_DEPTH) > MAX_DEPTH:
            raise _too_deep()
        return
    if _data_depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise _too_deep()
    try:
        size = len(json.dumps(data, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError):
        raise ConfigError("config", "must be JSON data (objects, lists, strings, numbers, booleans, null)")
    if size > MAX_CONFIG_BYTES:
        raise _too_big(size)


def decode(data):
    """The config as decoded JSON data, its size and depth checked first."""
    check_bounds(data)
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    if isinstance(data, str):
        try:
            return json.loads(data, object_pairs_hook=_object_from_pairs)
        except ValueError as err:
            if not data.lstrip().startswith("{"):  # such as a bare CIDR given for the whole config
                raise ConfigError("config", "must be a JSON object (a dictionary) or JSON text of one, got the "
                                            "text %s" % shown(data))
            raise ConfigError("config", "is not valid JSON: %s" % err)
    return data


class KeyReader:
    """Folds an object's keys as Go's encoding/json matches them (case-insensitively) and deals
    with keys flannel does not know: refused (strict) or noted in `warnings` and ignored."""

    def __init__(self, strict):
        self.strict = strict
        self.warnings = []
        self.ignored = 0

    def note(self, key, rule):
        if self.strict:
            raise ConfigError(key, rule)
        self.ignored += 1
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append("%s: %s, ignored" % (key, rule))

    def fields(self, data, where, known, listed=None):
        """{lower-case key: value} of the known keys of the object `data` found at `where`; an
        unknown key's message suggests and lists the keys of `listed` (default: all known)."""
        if not isinstance(data, dict):
            if where == "config":
                raise ConfigError("config", "must be a JSON object (a dictionary) or JSON text of one, got %s"
                                  % kind(data))
            raise ConfigError(where, "must be a JSON object, got %s" % kind(data))
        prefix = "" if where == "config" else where + "."
        spelled = dict((name.lower(), name) for name in known)
        listed = listed or known
        suggested = dict((name.lower(), name) for name in listed)
        fields, given = {}, {}
        for key in getattr(data, "repeated", ()):
            self.note(prefix + _key_name(key), "given more than once (the last one counts)")
        for key, value in data.items():
            key = _key_name(str(key))
            folded = key.lower()
            if folded not in spelled:
                import difflib  # only for a key that is not known: a correct config never loads it

                close = difflib.get_close_matches(folded, suggested, n=1, cutoff=0.6)
                hint = 'did you mean "%s"? ' % suggested[close[0]] if close else ""
                self.note(prefix + key, "unknown key (%sknown keys: %s)" % (hint, ", ".join(listed)))
                continue
            if folded in given:
                self.note(prefix + key, "given twice, as %s and %s: keys are case-insensitive (the last one "
                                        "counts)" % (given[folded], key))
            given[folded] = key
            fields[folded] = value
        return fields

    def summary(self):
        extra = self.ignored - len(self.warnings)
        return self.warnings + (["and %d more such keys, ignored" % extra] if extra > 0 else [])


def integer(value, key):
    # bool is an int subclass in Python, but JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, "must be an integer, got %s" % shown(value))
    return value


def boolean(value, key):
    if not isinstance(value, bool):
        raise ConfigError(key, "must be true or false, got %s" % shown(value))
    return value


def text(value, key, example):
    if not isinstance(value, str):
        raise ConfigError(key, "must be %s, got %s" % (example, shown(value)))
    if value != value.strip():
        raise ConfigError(key, "must not have surrounding whitespace, got %s" % shown(value))
    return value


# The dual-stack keys (flannel v0.15+). Here, not in config_ipv6, so that config.py can tell
# whether a config needs config_ipv6 without importing it (an IPv4-only agent never does).
IPV6_KEYS = ("EnableIPv4", "EnableIPv6", "IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax")


def check_overlay_range(network, key, given, not_unicast, example, unicast_note=""):
    """Refuse a Network (an IPNetwork of either family, `given` as written) that is no range of
    the overlay's own: host bits set, the whole address space, or overlapping a block of
    `not_unicast` ((IPNetwork, name) pairs) that holds no host's unicast address. Messages name
    `key`; `example` is a range to suggest."""
    if network.ip != network.network:
        raise ConfigError(key, "%s has host bits set: must be a network address, such as %s" % (given, network.cidr))
    if network.prefixlen == 0:
        raise ConfigError(key, "%s is the whole address space, the hosts' own addresses included: "
                               "give the overlay a range of its own, such as %s" % (network, example))
    for block, name in not_unicast:
        if network.first <= block.last and block.first <= network.last:
            raise ConfigError(key, "%s overlaps the %s range %s: must be IPv%d unicast space%s"
                              % (given, name, block, network.version, unicast_note))


def subnet_length(fields, network, family=""):
    """The length of each host's subnet in `network` (an IPNetwork of either family), from
    `fields`' SubnetLen, or IPv6SubnetLen with `family` "IPv6", by upstream's rules and messages:
    by default /24 (IPv4) or /64 (IPv6), or two bits past a network too small for it; room for at
    least four subnets; at least two addresses in each."""
    width, default = (32, 24) if network.version == 4 else (128, 64)
    network_key, length_key = family + "Network", family + "SubnetLen"
    if length_key.lower() not in fields:
        if network.prefixlen > width - 4:
            raise ConfigError(network_key, "%s is too small. Minimum useful network prefix is /%d"
                              % (network_key, width - 4))
        return default if network.prefixlen <= default - 2 else network.prefixlen + 2
    length = integer(fields[length_key.lower()], length_key)
    if length > width - 2:
        raise ConfigError(length_key, "%s must be less than /%d" % (length_key, width - 1))
    if length < network.prefixlen + 2:
        raise ConfigError(length_key, "%s must be able to accommodate at least four subnets" % network_key)
    return length
