"""HTTPS fetches from Amazon SNS hosts only: signing certificates (checked and cached) and subscription
confirmations.

A URL is fetched only when it is `https://sns.<region>.amazonaws.com[.cn]/...` (the AWS SDKs' rule) with a region
of SNS_REGIONS, over verified TLS, with a timeout, no redirects and a size cap. A signing certificate must also
chain to SNS_TRUST_ROOTS_FILE, be valid now and name SNS_CERT_NAME; it is kept per URL for an hour. When the PEM
holds the leaf alone and it does not chain by itself, its issuer is fetched from the leaf's caIssuers URL, only
from Amazon Trust Services (crt.*.amazontrust.com), and must itself chain to the roots.

SNS_CONNECT_TO (tests only) sends the request for such a host to another address — the host rule, the Host
header and the TLS name check stay those of the SNS host, so it cannot widen what is trusted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

import certifi

from bot.alerts.config import AlertSourceSettings
from bot.alerts.http import Refused

# cryptography (~10 MiB of OpenSSL bindings) and httpx are imported by the first SNS message, not by every HTTP
# process.
if TYPE_CHECKING:
    import httpx
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.x509.verification import Store

SNS_HOST = re.compile(r"^sns\.([a-z0-9][a-z0-9-]*[a-z0-9])\.amazonaws\.com(\.cn)?$")
AIA_HOST = re.compile(r"^crt\.[a-z0-9-]+(\.[a-z0-9-]+)*\.amazontrust\.com$")  # Amazon Trust Services' certificates
TIMEOUT_S = 5.0
CERT_MAX_BYTES = 32 * 1024  # a leaf plus its intermediates; the SDKs allow 10 KB for the leaf alone
CONFIRM_MAX_BYTES = 64 * 1024
CERT_TTL_S = 3600.0
CACHED_CERTS = 32  # distinct certificate URLs kept; SNS rotates them rarely


class Untrusted(Refused):
    def __init__(self, message: str) -> None:
        super().__init__(401, message)


class Unavailable(Refused):
    def __init__(self, message: str) -> None:
        super().__init__(503, message)


@dataclass
class SnsFetcher:
    settings: AlertSourceSettings
    _client: httpx.AsyncClient | None = None
    _anchors: Store | None = None
    _certs: dict[str, tuple[RSAPublicKey, float]] = field(default_factory=dict)
    _pending: dict[str, asyncio.Future] = field(default_factory=dict)
    _issuers: dict[str, x509.Certificate] = field(default_factory=dict)  # caIssuers URL → certificate

    def sns_url(self, url: str, *, suffix: str = "") -> tuple[str, str]:
        """(host, path?query) of an SNS URL in an allowed region; `Untrusted` for anything else."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        found = SNS_HOST.fullmatch(host)
        if parts.scheme != "https" or _port(parts) not in (None, 443) or parts.username or not found:
            raise Untrusted("the URL is not an https://sns.<region>.amazonaws.com address")
        if found.group(1) not in self.settings.regions():
            raise Untrusted(f"SNS region {found.group(1)} is not one of SNS_REGIONS")
        if suffix and not parts.path.endswith(suffix):
            raise Untrusted(f"the signing certificate URL does not end in {suffix}")
        return host, parts.path + (f"?{parts.query}" if parts.query else "")

    async def public_key(self, url: str) -> RSAPublicKey:
        """The checked signing key behind `url`; concurrent first requests share one fetch."""
        cached = self._certs.get(url)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        if url not in self._pending:
            self._pending[url] = asyncio.ensure_future(self._load(url))
            self._pending[url].add_done_callback(lambda _f: self._pending.pop(url, None))
        return await asyncio.shield(self._pending[url])

    async def _load(self, url: str) -> RSAPublicKey:
        host, path = self.sns_url(url, suffix=".pem")
        pem = await self.get(host, path, CERT_MAX_BYTES)
        key = await self._checked_key(pem)
        if len(self._certs) >= CACHED_CERTS:
            self._certs.pop(next(iter(self._certs)))
        self._certs[url] = (key, time.monotonic() + CERT_TTL_S)
        return key

    async def _checked_key(self, pem: bytes) -> RSAPublicKey:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

        try:
            leaf, *intermediates = x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise Untrusted("the signing certificate is not PEM") from None
        problem = self._chain_problem(leaf, intermediates)
        if problem and not intermediates and (issuer := await self._aia_issuer(leaf)):
            problem = self._chain_problem(leaf, [issuer])
        if problem:
            raise Untrusted(f"the signing certificate is not trusted: {problem}")
        key = leaf.public_key()
        if not isinstance(key, RSAPublicKey):
            raise Untrusted("the signing certificate's key is not RSA")
        return key

    def _chain_problem(self, leaf: x509.Certificate, intermediates: list[x509.Certificate]) -> str | None:
        from cryptography.x509.verification import DNSName, PolicyBuilder, VerificationError

        verifier = (PolicyBuilder().store(self._trust()).time(dt.datetime.now(dt.UTC))
                    .build_server_verifier(DNSName(self.settings.sns_cert_name)))
        try:
            verifier.verify(leaf, intermediates)
        except VerificationError as exc:
            return str(exc)
        return None

    async def _aia_issuer(self, leaf: x509.Certificate) -> x509.Certificate | None:
        """The issuing (intermediate) certificate a leaf-only PEM leaves out, from the leaf's caIssuers URL —
        fetched only from Amazon Trust Services' repository (crt.*.amazontrust.com), and still only trusted if
        it chains to the trust roots."""
        for url in _ca_issuers(leaf):
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            if parts.scheme in ("http", "https") and _port(parts) in (None, 80, 443) and AIA_HOST.fullmatch(host):
                if url not in self._issuers:
                    body = await self.get(host, parts.path, CERT_MAX_BYTES, scheme=parts.scheme)
                    self._issuers[url] = _one_certificate(body)
                return self._issuers[url]
        return None

    def _trust(self) -> Store:
        from cryptography import x509
        from cryptography.x509.verification import Store

        if self._anchors is None:
            path = self.settings.sns_trust_roots_file or certifi.where()
            with open(path, "rb") as pem:
                self._anchors = Store(x509.load_pem_x509_certificates(pem.read()))
        return self._anchors

    async def get(self, host: str, path: str, max_bytes: int, *, scheme: str = "https") -> bytes:
        """GET https://<host><path> (an SNS host already checked). A 4xx or an oversized answer is `Untrusted`;
        a network failure or a 5xx is a 503, which SNS retries — a legitimate alarm must not be lost to a blip."""
        import httpx

        target = self.settings.sns_connect_to.get(host, host)
        try:
            async with self._http().stream("GET", f"{scheme}://{target}{path}", headers={"host": host},
                                           extensions={"sni_hostname": host}) as response:
                if response.status_code >= 500:
                    raise Unavailable(f"{host} answered HTTP {response.status_code}; try again")
                if response.status_code != 200:
                    raise Untrusted(f"{host} answered HTTP {response.status_code}")
                return await _capped(response, max_bytes)
        except httpx.HTTPError as exc:
            raise Unavailable(f"fetching from {host} failed ({type(exc).__name__}); try again") from None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            context = ssl.create_default_context(cafile=str(self.settings.sns_tls_ca_file or certifi.where()))
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._client = httpx.AsyncClient(verify=context, timeout=TIMEOUT_S, follow_redirects=False,
                                             trust_env=False)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _port(parts: SplitResult) -> int | None:
    """The URL's port; -1 for one that is not a port at all (`:abc`, `:99999`), which urlsplit raises on — an
    unverified message must get its 401, not a 500 with its URL in a traceback."""
    try:
        return parts.port
    except ValueError:
        return -1


def _ca_issuers(cert: x509.Certificate) -> list[str]:
    from cryptography import x509
    from cryptography.x509.oid import AuthorityInformationAccessOID

    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [d.access_location.value for d in access if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
            and isinstance(d.access_location, x509.UniformResourceIdentifier)]


def _one_certificate(body: bytes) -> x509.Certificate:
    """A caIssuers answer: one DER certificate (RFC 5280), or PEM."""
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(body)
    except ValueError:
        pass
    try:
        return x509.load_pem_x509_certificate(body)
    except ValueError:
        raise Untrusted("the issuing certificate is neither DER nor PEM") from None


async def _capped(response: Any, max_bytes: int) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > max_bytes:
            raise Untrusted(f"the answer is larger than {max_bytes} bytes")
    return bytes(data)
