"""Real local servers for network tests: HTTP(S) with scripted replies, sockets that misbehave, and certificates.

Everything binds to loopback. Linux routes all of 127.0.0.0/8 to `lo`, so a test can have several "hosts"
(127.0.0.1 answers, 127.0.0.2 hangs) the way a load balancer has one address per zone.

    with local_http_server({"/health": Reply(200), "/slow": Reply(200, delay_s=2)}) as server:
        server.url("/health")                  # http://127.0.0.1:<port>/health
    with silent_listener("127.0.0.2", port=server.port):     # accepts TCP, never answers → read timeout
    with blackhole_listener() as (host, port): ...           # backlog full, SYNs dropped → connect timeout
    with closed_port() as (host, port): ...                  # nothing listening → connection refused
    ca = TestCA(); leaf = ca.issue(["api.test"], days=90)   # certificates made at test time
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# ---------------------------------------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP response."""

    status: int = 200
    body: bytes = b"ok"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long before answering (interrupted when the server stops)


Route = Reply | Sequence[Reply]  # a sequence is played in order per request; its last reply then repeats


class LocalHttpServer(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: ten concurrent probes would see SYNs dropped and a 1 s retransmit.
    request_queue_size = 128
    daemon_threads = True
    block_on_close = False  # a handler sleeping in `delay_s` must not hold up the test's teardown

    def __init__(self, host: str, routes: Mapping[str, Route], ssl_context: ssl.SSLContext | None,
                 port: int = 0) -> None:
        self.routes = {path: [route] if isinstance(route, Reply) else list(route) for path, route in routes.items()}
        self.hits: list[str] = []  # paths requested, in order
        self.request_headers: list[dict[str, str]] = []  # the headers of each request, in the same order
        self.stopping = threading.Event()
        self.ssl_context = ssl_context
        self._lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def host(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str = "/", host: str | None = None) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def next_reply(self, path: str) -> Reply:
        with self._lock:
            self.hits.append(path)
            script = self.routes.get(path)
            if not script:
                return Reply(404, b"not found")
            served = self.hits.count(path) - 1
            return script[min(served, len(script) - 1)]

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        # The TLS handshake happens here, in the handler thread, so a client that never handshakes
        # (or fails to) cannot block the accept loop.
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with tls:
            super().finish_request(tls, client_address)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out and hang up are part of the tests, not errors worth a traceback


class _Handler(BaseHTTPRequestHandler):
    server: LocalHttpServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.request_headers.append(dict(self.headers.items()))
        reply = self.server.next_reply(self.path.split("?", 1)[0])
        if reply.delay_s and self.server.stopping.wait(reply.delay_s):
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextmanager
def local_http_server(routes: Mapping[str, Route], *, host: str = "127.0.0.1", port: int = 0,
                      ssl_context: ssl.SSLContext | None = None) -> Iterator[LocalHttpServer]:
    """An HTTP (or, with `ssl_context`, HTTPS) server on `host` and `port` (0: a free one), answering per path.
    Unknown paths get 404; `server.hits` lists the paths requested."""
    server = LocalHttpServer(host, routes, ssl_context, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)


# ----------------------------------------------------------------------------------------------------------- TCP


@contextmanager
def silent_listener(host: str = "127.0.0.1", port: int = 0) -> Iterator[tuple[str, int]]:
    """Listens but never accepts or answers: the kernel completes TCP handshakes, so clients hit a read timeout
    (or a TLS handshake timeout)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, port))
        sock.listen(16)
        yield host, sock.getsockname()[1]


@contextmanager
def blackhole_listener(host: str = "127.0.0.1", port: int = 0) -> Iterator[tuple[str, int]]:
    """A port whose accept queue is full, so the kernel drops new SYNs: clients hit a connect timeout, the way
    they do when a security group or NACL drops packets."""
    with ExitStack() as stack:
        sock = stack.enter_context(socket.socket(_family(host), socket.SOCK_STREAM))
        sock.bind((host, port))
        sock.listen(0)
        port = sock.getsockname()[1]
        for _ in range(4):  # fill the queue (Linux admits backlog + 1); the rest of the attempts time out
            filler = stack.enter_context(socket.socket(_family(host), socket.SOCK_STREAM))
            filler.settimeout(0.2)
            try:
                filler.connect((host, port))
            except OSError:
                break
        yield host, port


@contextmanager
def closed_port(host: str = "127.0.0.1", port: int = 0) -> Iterator[tuple[str, int]]:
    """A port nothing listens on: clients get connection refused. The port stays bound (not listening) for the
    block, so no other test can start a server on it meanwhile."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, port))
        yield host, sock.getsockname()[1]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# ---------------------------------------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Leaf:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def server_context(self, chain: Sequence[x509.Certificate] = ()) -> ssl.SSLContext:
        """A server-side SSLContext presenting this certificate (plus `chain`)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory(prefix="test-tls-") as directory:
            cert_path, key_path = Path(directory) / "cert.pem", Path(directory) / "key.pem"
            cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.cert, *chain)))
            key_path.write_bytes(self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            context.load_cert_chain(cert_path, key_path)
        return context


class TestCA:
    """A throwaway certificate authority. `trust_file()` writes its PEM for SSL_CERT_FILE or `cafile=`."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str = "Test Root CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def trust_file(self, directory: Path) -> Path:
        path = directory / "test-ca.pem"
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA (for an httpx client under test)."""
        return ssl.create_default_context(cadata=self.cert.public_bytes(serialization.Encoding.PEM).decode())

    def issue(self, names: Sequence[str], *, days: float = 90, now: dt.datetime | None = None,
              valid_from_days: float = -1) -> Leaf:
        """A leaf certificate for `names` (DNS names or IPs) valid until `now + days` (negative: already expired)."""
        return _leaf(names, days=days, now=now, valid_from_days=valid_from_days, issuer=self)


def self_signed(names: Sequence[str], *, days: float = 90, now: dt.datetime | None = None,
                valid_from_days: float = -1) -> Leaf:
    """A self-signed leaf certificate, which no system store trusts."""
    return _leaf(names, days=days, now=now, valid_from_days=valid_from_days, issuer=None)


def _leaf(names: Sequence[str], *, days: float, now: dt.datetime | None, valid_from_days: float,
          issuer: TestCA | None) -> Leaf:
    key = ec.generate_private_key(ec.SECP256R1())
    now = now or dt.datetime.now(dt.UTC)
    not_before = min(now + dt.timedelta(days=valid_from_days), now + dt.timedelta(days=days) - dt.timedelta(days=1))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return Leaf(cert, key)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ip_address(name))
    except ValueError:
        return x509.DNSName(name)
