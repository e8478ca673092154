"""flannel's registry on etcd's v2 API (flanneld v0.10's), through python-etcd; its watch on a
kept-alive connection of its own (v2_watch.py).

Every lease write is conditional (prevExist=false to create, prevIndex to change or delete).
"""

try:
    import etcd
except ImportError:  # reported by the caller through missing_libraries()
    etcd = None

from ..etcd_http import BadReply, BoundedHTTP, checked_v2_node, checked_v2_nodes, excerpt
from ..lease import Lease, LeaseAttrs, checked_lease
from .base import (DEFAULT_ENDPOINTS, DEFAULT_PREFIX, LeaseListing, Registry, claim_holder, claim_value, counted,
                   parse_endpoints, subnets_of_key, unanswered)
from .errors import ConfigMissing, IndexCleared, RegistryAuthError, RegistryBadReply, RegistryError, _root_cause
from .v2_watch import V2Watch

_REMOVAL_ACTIONS = ("delete", "expire", "compareAndDelete")
# python-etcd 0.4.5's messages for a 200 whose body it could not make a result of, and what they mean.
_UNDECODABLE = {"Server response was not valid JSON": "not JSON",
                "Unable to decode server response": "wrong shape: not an etcd v2 reply"}


class EtcdRegistry(Registry):
    """flannel's registry on an etcd v2 cluster, failing over between endpoints."""

    api = "v2"

    def __init__(self, endpoints=DEFAULT_ENDPOINTS, prefix=DEFAULT_PREFIX, ca_file=None, cert_file=None,
                 key_file=None, username=None, password=None, timeout=5.0):
        super().__init__(prefix, timeout)
        cert = (cert_file, key_file) if cert_file and key_file else cert_file or None
        # One client per endpoint without python-etcd's own reconnect, which queries the
        # cluster while constructing and so cannot start while etcd is down.
        parsed = parse_endpoints(endpoints)
        self._clients = [etcd.Client(host=host, port=port, protocol=scheme, cert=cert, ca_cert=ca_file,
                                     username=username, password=password, read_timeout=timeout,
                                     allow_reconnect=False)
                         for scheme, host, port in parsed]
        # Every reply python-etcd asks for is read within etcd_http's limits, inside the gate.
        for client in self._clients:
            client.http = BoundedHTTP(client.http, self.gate)
        # The watch's own connections, one per endpoint (v2_watch.py).
        self._watches = [V2Watch(client, scheme, host, port, username, password, self.gate)
                         for client, (scheme, host, port) in zip(self._clients, parsed)]
        self._current = 0

    def close(self):
        """Close the watch's kept-alive connections."""
        for watch in self._watches:
            watch.close()

    def _call(self, operation):
        """Run operation(client), moving to the next endpoint when one cannot be reached."""
        last_error = bad_reply = None
        for _attempt in range(len(self._clients)):
            client = self._clients[self._current]
            try:
                result = operation(client)
                return checked_v2_node(result, client.base_uri) if isinstance(result, etcd.EtcdResult) else result
            except etcd.EtcdWatchTimedOut:
                raise
            except (etcd.EtcdKeyNotFound, etcd.EtcdAlreadyExist, etcd.EtcdCompareFailed,
                    etcd.EtcdEventIndexCleared):
                raise  # answers about the keys, which the callers handle
            except etcd.EtcdInsufficientPermissions as err:
                raise RegistryAuthError("etcd at %s refused access to %s: %s (check -etcd-username and "
                                        "-etcd-password, and the user's role)"
                                        % (client.base_uri, self.prefix, _root_cause(err)))
            except (etcd.EtcdKeyError, etcd.EtcdValueError) as err:
                # e.g. <prefix>/subnets written as a plain key: only an operator can fix that.
                raise RegistryError("etcd refused an operation under %s: %s" % (self.prefix, excerpt(err)))
            except etcd.EtcdException as err:
                # Anything else (unreachable, a leader election) is etcd not serving now; a reply
                # over the limits is the cause of a failed request, an undecodable one is said so.
                cause = getattr(err, "cause", None)
                last_error = cause if isinstance(cause, BadReply) else err
                for said, problem in _UNDECODABLE.items():
                    if str(err).startswith(said):
                        last_error = BadReply(client.base_uri, problem)
            except BadReply as err:  # a node of the wrong shape
                last_error = err
            except (TypeError, AttributeError, KeyError, RecursionError):  # python-etcd choking on one
                last_error = BadReply(client.base_uri, "wrong shape: not an etcd v2 reply")
            if isinstance(last_error, BadReply):
                bad_reply = last_error
            self._current = (self._current + 1) % len(self._clients)
        raise unanswered([c.base_uri for c in self._clients], last_error, bad_reply)

    # ---- network config -------------------------------------------------------------------

    @counted("get_config")
    def get_config(self):
        try:
            return self._call(lambda c: c.read(self.config_key, quorum=True)).value
        except etcd.EtcdKeyNotFound:
            raise ConfigMissing("%s does not exist in etcd (written with the v3 API? flannel reads v2)"
                                % self.config_key)

    @counted("put_config")
    def put_config(self, text):
        self._call(lambda c: c.write(self.config_key, text))

    # ---- leases ---------------------------------------------------------------------------

    def _lease_from_node(self, node, config=None, subnets=None):
        subnet, ipv6_subnet = subnets or subnets_of_key(node.key, self.subnets_key)
        attrs = LeaseAttrs.from_json(node.value)
        return checked_lease(Lease(subnet, attrs, ttl=node.ttl, modified_index=node.modifiedIndex,
                                   created_index=node.createdIndex or 0, ipv6_subnet=ipv6_subnet), config, self.onlink())

    def _config_text(self, node):
        return node.value

    def _is_directory(self, node):
        return node.dir

    @counted("list_leases")
    def list_leases(self, config=None):
        try:
            result = self._call(lambda c: c.read(self.subnets_key, recursive=True, quorum=True))
            nodes = checked_v2_nodes(result, self._clients[self._current].base_uri)
        except etcd.EtcdKeyNotFound as err:
            index = (err.payload or {}).get("index", 0) if isinstance(err.payload, (dict, type(None))) else None
            if isinstance(index, int) and not isinstance(index, bool):
                return LeaseListing([], index, [], [])
            raise RegistryBadReply("etcd reply from %s: wrong shape: error index %s"
                                   % (self._clients[self._current].base_uri, excerpt(repr(index), 60)))
        except BadReply as err:
            raise RegistryBadReply(str(err))
        # Not the listing itself, nor what a directory below it holds (the directory is named).
        listed = [(node.key, node) for node in nodes
                  if node.key != self.subnets_key and node.key.rsplit("/", 1)[0] == self.subnets_key]
        return self._listing(listed, result.etcd_index, config)

    @counted("get_lease")
    def get_lease(self, subnet, ipv6_subnet=None):
        try:
            return self._lease_from_node(self._call(lambda c: c.read(self.lease_key(subnet, ipv6_subnet), quorum=True)))
        except etcd.EtcdKeyNotFound:
            return None

    @counted("create_lease")
    def create_lease(self, subnet, attrs, ttl, ipv6_subnet=None):
        try:
            node = self._call(lambda c: c.write(self.lease_key(subnet, ipv6_subnet), attrs.to_json(), ttl=ttl or None,
                                                prevExist=False))
        except etcd.EtcdAlreadyExist:
            return None
        return self._lease_from_node(node)

    @counted("update_lease")
    def update_lease(self, lease, attrs, ttl):
        key = self.key_of(lease)
        try:
            if attrs == lease.attrs and ttl and not lease.is_reservation:
                node = self._call(lambda c: c.refresh(key, ttl, prevIndex=lease.modified_index))
                return Lease(lease.subnet, attrs, ttl=node.ttl, modified_index=node.modifiedIndex,
                             created_index=lease.created_index, ipv6_subnet=lease.ipv6_subnet)
            node = self._call(lambda c: c.write(key, attrs.to_json(), ttl=ttl or None,
                                                prevIndex=lease.modified_index))
        except (etcd.EtcdCompareFailed, etcd.EtcdKeyNotFound):
            return None
        return self._lease_from_node(node)

    @counted("delete_lease")
    def delete_lease(self, lease):
        try:
            self._call(lambda c: c.delete(self.key_of(lease), prevIndex=lease.modified_index))
        except (etcd.EtcdCompareFailed, etcd.EtcdKeyNotFound):
            return False
        return True

    # ---- public IP claims ------------------------------------------------------------------

    @counted("claim_public_ip")
    def claim_public_ip(self, public_ip, host_id, ttl):
        key = self.host_claim_key(public_ip)
        value = claim_value(host_id)
        for _attempt in range(3):
            try:
                # Ours already at every refresh after the first: one request. A refresh wakes no
                # watcher: agents watching the whole prefix sleep through it.
                self._call(lambda c: c.refresh(key, ttl, prevValue=value))
                return None
            except etcd.EtcdKeyNotFound:
                pass
            except etcd.EtcdCompareFailed:
                try:
                    text = self._call(lambda c: c.read(key, quorum=True)).value
                except etcd.EtcdKeyNotFound:
                    continue
                return claim_holder(text, key)
            try:
                self._call(lambda c: c.write(key, value, ttl=ttl, prevExist=False))
                return None
            except etcd.EtcdAlreadyExist:
                pass
        raise RegistryError("could not claim %s: it changed three times in a row" % key)

    @counted("watch_leases")
    def watch_leases(self, after_index, timeout, config=None, with_config=False):
        watched = self.prefix if with_config else self.subnets_key
        try:
            # _call's endpoint is the current one, as its watch's.
            node = self._call(lambda _client: self._watches[self._current].read(watched, after_index + 1, timeout))
        except etcd.EtcdWatchTimedOut:
            return [], after_index, None
        except etcd.EtcdEventIndexCleared:
            raise IndexCleared("etcd's event history no longer reaches index %d" % (after_index + 1))
        except etcd.EtcdKeyNotFound:
            raise IndexCleared("%s is missing" % watched)
        if node.key in (self.subnets_key, watched):
            raise IndexCleared("%s itself changed (%s)" % (node.key, node.action))
        return self._change(node.key, node.action in _REMOVAL_ACTIONS, node, node.modifiedIndex, config)
