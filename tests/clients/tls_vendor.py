"""The fake vendor served over TLS, with a test CA of its own.

`make_upstream_pki(dir)` creates (with the `openssl` command) an upstream CA and one leaf for
the fake vendor: SAN IP 127.0.0.1 (the proxy connects to `[forward.resolve]` targets such as
`https://127.0.0.1:PORT` and verifies the certificate against that address) and the DNS names
of the vendor hosts. The CA is given to the proxy as `[upstreams] ca_file`; the clients never
see it (they trust only the proxy's interception CA).

`TlsFakeVendor` is `FakeVendor` with every family's server speaking TLS; `url()` answers
`https://127.0.0.1:PORT`, so the harness's generated config points upstreams and
`[forward.resolve]` at the TLS servers. The TLS handshake runs in the connection's own thread,
so a client that stalls or fails its handshake does not hold up the others; failed handshakes
(the proxy not trusting the vendor, or speaking plain HTTP to it) are listed in `problems()`.
"""

from __future__ import annotations

import secrets
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from fake_vendor import FAMILIES, FakeVendor, _make_handler, _QuietServer
from harness import REAL_HOSTS

HANDSHAKE_TIMEOUT_S = 10.0


@dataclass
class UpstreamPKI:
    ca_cert: Path  # PEM, for `[upstreams] ca_file`
    cert: Path  # the fake vendor's leaf (PEM)
    key: Path  # its key (PEM)


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (
        f"openssl {' '.join(args[:2])} failed: {(r.stdout + r.stderr).decode(errors='replace')}"
    )


def make_upstream_pki(directory: Path) -> UpstreamPKI:
    """An upstream CA and a leaf for 127.0.0.1 and the vendor hosts, valid for two days."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/O=retention-proxy tests/CN=Fake vendor upstream CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", "-new", *ec, "-keyout", "vendor.key", "-out", "vendor.csr",
             "-subj", "/O=retention-proxy tests/CN=fake vendor", cwd=d)
    san = ",".join(["IP:127.0.0.1"] + [f"DNS:{h}" for h in REAL_HOSTS.values()])
    (d / "vendor.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={san}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl("x509", "-req", "-in", "vendor.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-set_serial", "0x" + secrets.token_hex(8), "-days", "2", "-sha256",
             "-extfile", "vendor.ext", "-out", "vendor.pem", cwd=d)
    return UpstreamPKI(ca_cert=d / "ca.pem", cert=d / "vendor.pem", key=d / "vendor.key")


class _TlsServer(_QuietServer):
    def __init__(self, address, handler, context: ssl.SSLContext, vendor: "TlsFakeVendor",
                 family: str):
        self.context = context
        self.vendor = vendor
        self.family = family
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        # Runs in the connection's thread (ThreadingMixIn), so the handshake does too.
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self.vendor.tls_failed:
                self.vendor.tls_failures.append((self.family, repr(e)))
                self.vendor.tls_failed.notify_all()
            return
        try:
            tls.settimeout(None)
            with self.vendor.lock:
                self.vendor.tls_versions.append((self.family, tls.version()))
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass


class TlsFakeVendor(FakeVendor):
    def __init__(self, secrets, slack_tokens=(), *, pki: UpstreamPKI):
        super().__init__(secrets, slack_tokens)
        self.pki = pki
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(pki.cert), str(pki.key))
        self.tls_failures: list[tuple[str, str]] = []  # (family, error) of failed handshakes
        self.tls_versions: list[tuple[str, str]] = []  # (family, version) per connection
        self.tls_failed = threading.Condition(self.lock)

    def wait_tls_failure(self, timeout: float = 10.0) -> list:
        """Wait until a handshake has failed (the server learns of it from the client's alert,
        possibly after the client has already answered its own caller); returns the failures."""
        with self.tls_failed:
            self.tls_failed.wait_for(lambda: self.tls_failures, timeout)
            return list(self.tls_failures)

    def start(self):
        for family in FAMILIES:
            server = _TlsServer(("127.0.0.1", 0), _make_handler(self, family), self.context,
                                self, family)
            self._servers[family] = server
            t = threading.Thread(
                target=server.serve_forever, name=f"fake-tls-{family}", daemon=True,
                kwargs={"poll_interval": 0.05},
            )
            t.start()
            self._threads.append(t)
        return self

    def url(self, family):
        return f"https://127.0.0.1:{self.port(family)}"

    def problems(self):
        out = super().problems()
        with self.lock:
            out += [f"TLS handshake with the {family} server failed: {err}"
                    for family, err in self.tls_failures]
        return out
