"""etcd over TLS with client-certificate auth, and its PKI made with openssl in a tmp dir.

The certificates are made the way the etcd role makes them on the controller (EC P-256, one CA,
certificates with serverAuth+clientAuth and IP SANs, a client-only certificate for the agents).
The servers reuse etcdserver.py's EtcdServer and cluster.py's Cluster: TLS
reaches etcd through its ETCD_* environment variables, and the readiness probes present the
client certificate through urllib's global opener while the server starts.
"""

import contextlib
import os
import ssl
import subprocess
import urllib.request

import pytest

from .etcdserver import EtcdServer


class Pki:
    """A CA in a directory, issuing EC certificates with openssl (>= 3.0 for `req -x509 -CA`)."""

    def __init__(self, directory, name="netlab-test-ca"):
        self.directory = str(directory)
        self.ca = os.path.join(self.directory, "%s.pem" % name)
        self.ca_key = os.path.join(self.directory, "%s-key.pem" % name)
        self._openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                       "-keyout", self.ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=" + name,
                       "-addext", "basicConstraints=critical,CA:TRUE",
                       "-addext", "keyUsage=critical,keyCertSign,cRLSign"])

    @staticmethod
    def _openssl(args):
        result = subprocess.run(["openssl"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True, check=False)
        if result.returncode != 0:
            pytest.fail("openssl %s failed: %s" % (" ".join(args[:2]), result.stderr))

    def issue(self, name, ips=(), server=True):
        """(cert, key) paths; a server certificate is also a client one, as the role's member certificates."""
        cert = os.path.join(self.directory, "%s.pem" % name)
        key = os.path.join(self.directory, "%s-key.pem" % name)
        args = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + name,
                "-CA", self.ca, "-CAkey", self.ca_key,
                "-addext", "basicConstraints=critical,CA:FALSE",
                "-addext", "extendedKeyUsage=" + ("serverAuth,clientAuth" if server else "clientAuth")]
        if ips:
            args += ["-addext", "subjectAltName=" + ",".join("IP:%s" % ip for ip in ips)]
        self._openssl(args)
        return cert, key

    def etcd_env(self, cert, key):
        """etcd's settings for TLS on the client URLs with client-certificate auth."""
        return {"ETCD_CERT_FILE": cert, "ETCD_KEY_FILE": key, "ETCD_TRUSTED_CA_FILE": self.ca,
                "ETCD_CLIENT_CERT_AUTH": "true"}

    def client_context(self, cert=None, key=None):
        context = ssl.create_default_context(cafile=self.ca)
        if cert:
            context.load_cert_chain(cert, key)
        return context


@contextlib.contextmanager
def environment(values):
    """os.environ with `values` set (children started inside inherit them), restored afterwards."""
    saved = dict((name, os.environ.get(name)) for name in values)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def client_opener(context):
    """urllib.request.urlopen() presents `context`'s client certificate while inside."""
    urllib.request.install_opener(urllib.request.build_opener(urllib.request.HTTPSHandler(context=context)))
    try:
        yield
    finally:
        urllib.request.install_opener(None)


class TlsEtcdServer(EtcdServer):
    """tests/conftest.py's single-member etcd, serving clients over https only, certificates required."""

    def __init__(self, pki, enable_v2=True):
        super().__init__(enable_v2=enable_v2)
        self.pki = pki
        self.server_cert, self.server_key = pki.issue("etcd-loopback", ips=["127.0.0.1"])
        self.client_cert, self.client_key = pki.issue("etcd-client", server=False)

    @property
    def endpoint(self):
        return "https://127.0.0.1:%d" % self.client_port

    @property
    def client_files(self):
        """The EtcdRegistry / module keyword arguments of a client that etcd accepts."""
        return dict(ca_file=self.pki.ca, cert_file=self.client_cert, key_file=self.client_key)

    def start(self):
        with environment(self.pki.etcd_env(self.server_cert, self.server_key)), \
                client_opener(self.pki.client_context(self.client_cert, self.client_key)):
            return super().start()

    def wipe(self):
        with client_opener(self.pki.client_context(self.client_cert, self.client_key)):
            super().wipe()
