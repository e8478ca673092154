"""etcd's v3 JSON gateway (/v3/...) on urllib3, for the v3 registry: requests failing over between
endpoints, authentication, etcd's errors turned into the registry's, and the watch stream.

Every reply is read within etcd_http's limits, and SIGTERM can end the request it waits in.
"""

import base64
import json
import time

try:
    import urllib3
except ImportError:  # reported by the caller through missing_libraries()
    urllib3 = None

from ..etcd_http import REPLY_SECONDS, BadReply, BoundedHTTP, LineStream, excerpt, json_object, read_body
from .base import parse_endpoints, unanswered
from .errors import IndexCleared, RegistryAuthError, RegistryError, RegistryUnavailable, _root_cause
from .v3_watch import WatchStream

# gRPC status codes the gateway returns (google.golang.org/grpc/codes).
_CANCELED, _INVALID_ARGUMENT, _DEADLINE, _NOT_FOUND, _PERMISSION, _OUT_OF_RANGE, _UNAVAILABLE, _UNAUTHENTICATED = (
    1, 3, 4, 5, 7, 11, 14, 16)
_AUTH_WORDS = ("auth", "user name is empty", "permission denied", "invalid user")
_UNSERVED_WORDS = ("no leader", "timed out", "leader changed", "not capable", "too many requests", "stopped")
# etcd's answer to /v3/auth/authenticate while its auth is off.
_AUTH_OFF = "authentication is not enabled"


def b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def unb64(data, as_text=True):
    raw = base64.b64decode(data or "")
    return raw.decode("utf-8", "replace") if as_text else raw


def prefix_end(prefix):
    """The range_end that makes a range or watch cover every key starting with `prefix`."""
    raw = bytearray(prefix.encode("utf-8"))
    raw[-1] += 1  # prefixes here end in "/", never in 0xff
    return bytes(raw).decode("utf-8")


class _Unserved(Exception):
    """This endpoint cannot answer now: try the next one."""


def _code(data):
    """The gRPC code of an error answer (0 when it has none that is a number)."""
    try:
        return int(data.get("code", 0) or 0)
    except (TypeError, ValueError):
        return 0


class Gateway:
    """The gateways of `endpoints`, one of them current, for the registry of `prefix` (named in
    errors). `gate` is the registry's RequestGate."""

    def __init__(self, endpoints, prefix, timeout, gate, ca_file=None, cert_file=None, key_file=None,
                 username=None, password=None):
        self.prefix = prefix
        self.timeout = timeout
        self.gate = gate
        self.endpoints = ["%s://%s:%d" % parsed for parsed in parse_endpoints(endpoints)]
        tls = {}
        if ca_file:
            tls.update(cert_reqs="CERT_REQUIRED", ca_certs=ca_file)
        if cert_file:
            tls.update(cert_file=cert_file, key_file=key_file)
        self._http = BoundedHTTP(urllib3.PoolManager(num_pools=len(self.endpoints) + 1, retries=False,
                                                     timeout=urllib3.Timeout(connect=timeout, read=timeout), **tls),
                                 gate)
        self._credentials = (username, password) if username else None
        self._token = None
        self._current = 0

    def _post(self, base, path, body, stream=False):
        headers = {"Content-Type": "application/json"}
        if self._credentials and path != "/v3/auth/authenticate":
            if self._token is None:
                self._token = self._authenticate(base)
            if self._token:
                headers["Authorization"] = self._token
        encoded = json.dumps(body).encode("utf-8")
        try:
            if stream:
                return self._http.open_stream("POST", base + path, body=encoded, headers=headers)
            return self._http.request("POST", base + path, body=encoded, headers=headers)
        except BadReply:
            raise
        except urllib3.exceptions.HTTPError as err:
            raise _Unserved(_root_cause(err))

    def _answer(self, base, path, body):
        """The decoded answer of one endpoint; _Unserved when it cannot serve now, BadReply when
        its answer is not etcd's."""
        for attempt in (1, 2):
            response = self._post(base, path, body)
            try:
                data = json_object(response.data, base)
            except BadReply:
                if response.status == 200:
                    raise
                raise _Unserved("HTTP %d: %s" % (response.status, excerpt(bytes(response.data[:200]), 100)))
            if response.status == 200 and "error" not in data:
                return data
            code = _code(data)
            message = excerpt(data.get("message") or data.get("error") or "HTTP %d" % response.status)
            error = self._error_for(base, code, message)
            # An expired token, or auth turned on since we found it off: authenticate again, once.
            if self._credentials and attempt == 1 and (
                    code == _UNAUTHENTICATED or (self._token == "" and isinstance(error, RegistryAuthError))):
                self._token = None
                continue
            raise error
        raise RegistryAuthError("etcd at %s refused a fresh token under %s" % (base, self.prefix))

    def _error_for(self, base, code, message):
        """The exception for an error etcd answered with (gRPC code, message)."""
        lowered = message.lower()
        if code in (_PERMISSION, _UNAUTHENTICATED) or (
                code in (0, _INVALID_ARGUMENT) and any(word in lowered for word in _AUTH_WORDS)):
            return RegistryAuthError("etcd at %s refused access to %s: %s (check -etcd-username and "
                                     "-etcd-password, and the user's role)" % (base, self.prefix, message))
        # Canceled: the gateway's own connection to its member closed (the member is stopping).
        if code in (_CANCELED, _UNAVAILABLE, _DEADLINE) or any(word in lowered for word in _UNSERVED_WORDS):
            return _Unserved(message)
        if code == _OUT_OF_RANGE and "compacted" in lowered:
            return IndexCleared(message)
        return RegistryError("etcd refused an operation under %s: %s" % (self.prefix, message))

    def _stream_error_for(self, base):
        """How a watch stream turns etcd's reason for ending it into an exception."""
        def error_for(message):
            error = self._error_for(base, 0, message)
            if isinstance(error, (RegistryAuthError, IndexCleared)):
                return error
            return RegistryUnavailable("etcd at %s ended the watch: %s" % (base, message))
        return error_for

    def _authenticate(self, base):
        """A token for the credentials; "" when etcd's auth is off: etcd then serves everyone, as
        its v2 API does when given a user anyway, and etcd's own v3 client goes on without a token."""
        try:
            data = self._answer(base, "/v3/auth/authenticate",
                                {"name": self._credentials[0], "password": self._credentials[1]})
        except RegistryError as err:
            if _AUTH_OFF in str(err):
                return ""
            raise
        if not isinstance(data.get("token"), str):
            raise BadReply(base, "wrong shape: no token in etcd's answer to /v3/auth/authenticate")
        return data["token"]

    def _failover(self, attempt):
        """attempt(base) at the current endpoint, moving to the next one when it cannot serve or its
        answer is not etcd's."""
        last_error = bad_reply = None
        for _attempt in range(len(self.endpoints)):
            base = self.endpoints[self._current]
            try:
                return attempt(base)
            except BadReply as err:
                last_error = bad_reply = err
            except _Unserved as err:
                last_error = err
                self._token = None
            self._current = (self._current + 1) % len(self.endpoints)
        raise unanswered(self.endpoints, last_error, bad_reply)

    def call(self, path, body, read=None):
        """POST `body` to `path`; `read` takes what is used from the answer (a KeyError, TypeError
        or ValueError there means the answer has the wrong shape)."""
        def attempt(base):
            data = self._answer(base, path, body)
            try:
                return read(data) if read else data
            except (KeyError, TypeError, ValueError, AttributeError):
                raise BadReply(base, "wrong shape: not etcd's answer to %s" % path)
        return self._failover(attempt)

    def open_watch(self, watched, start_revision, cluster_id=None):
        """A WatchStream of every key under `watched`, from `start_revision` on (a revision of the
        cluster `cluster_id`, when known)."""
        body = {"create_request": {"key": b64(watched), "range_end": b64(prefix_end(watched)),
                                   "start_revision": start_revision}}

        def attempt(base):
            response = self._post(base, "/v3/watch", body, stream=True)
            if response.status != 200:
                try:
                    deadline = time.monotonic() + self.timeout + REPLY_SECONDS
                    data = json_object(read_body(response, base, deadline), base)
                finally:
                    response.close()
                raise self._error_for(base, _code(data), excerpt(data.get("message") or response.status))
            lines = LineStream(response, base, self.timeout, self.gate)
            return WatchStream(lines, watched, start_revision - 1, self._stream_error_for(base), cluster_id)
        return self._failover(attempt)
