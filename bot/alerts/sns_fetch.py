"""HTTPS fetches from Amazon SNS hosts only: signing certificates (checked and cached) and subscription
confirmations.

A URL is fetched only when it is `https://sns.<region>.amazonaws.com[.cn]/...` (the AWS SDKs' rule) with a region
of SNS_REGIONS, over verified TLS, with a timeout, no redirects and a size cap. A signing certificate must also
chain to SNS_TRUST_ROOTS_FILE, be valid now and name SNS_CERT_NAME; it is kept per URL for an hour.

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
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.x509.verification import DNSName, PolicyBuilder, Store, VerificationError

from bot.alerts.config import AlertSourceSettings
from bot.alerts.http import Refused

SNS_HOST = re.compile(r"^sns\.([a-z0-9][a-z0-9-]*[a-z0-9])\.amazonaws\.com(\.cn)?$")
TIMEOUT_S = 5.0
CERT_MAX_BYTES = 32 * 1024  # a leaf plus its intermediates; the SDKs allow 10 KB for the leaf alone
CONFIRM_MAX_BYTES = 64 * 1024
CERT_TTL_S = 3600.0
CACHED_CERTS = 32  # distinct certificate URLs kept; SNS rotates them rarely


class Untrusted(Refused):
    def __init__(self, message: str) -> None:
        super().__init__(401, message)


@dataclass
class SnsFetcher:
    settings: AlertSourceSettings
    _client: httpx.AsyncClient | None = None
    _anchors: Store | None = None
    _certs: dict[str, tuple[RSAPublicKey, float]] = field(default_factory=dict)
    _pending: dict[str, asyncio.Future] = field(default_factory=dict)

    def sns_url(self, url: str, *, suffix: str = "") -> tuple[str, str]:
        """(host, path?query) of an SNS URL in an allowed region; `Untrusted` for anything else."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        found = SNS_HOST.match(host)
        if parts.scheme != "https" or parts.port not in (None, 443) or parts.username or not found:
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
        key = self._checked_key(pem)
        if len(self._certs) >= CACHED_CERTS:
            self._certs.pop(next(iter(self._certs)))
        self._certs[url] = (key, time.monotonic() + CERT_TTL_S)
        return key

    def _checked_key(self, pem: bytes) -> RSAPublicKey:
        try:
            leaf, *intermediates = x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise Untrusted("the signing certificate is not PEM") from None
        verifier = (PolicyBuilder().store(self._trust()).time(dt.datetime.now(dt.UTC))
                    .build_server_verifier(DNSName(self.settings.sns_cert_name)))
        try:
            verifier.verify(leaf, intermediates)
        except VerificationError as exc:
            raise Untrusted(f"the signing certificate is not trusted: {exc}") from None
        key = leaf.public_key()
        if not isinstance(key, RSAPublicKey):
            raise Untrusted("the signing certificate's key is not RSA")
        return key

    def _trust(self) -> Store:
        if self._anchors is None:
            path = self.settings.sns_trust_roots_file or certifi.where()
            with open(path, "rb") as pem:
                self._anchors = Store(x509.load_pem_x509_certificates(pem.read()))
        return self._anchors

    async def get(self, host: str, path: str, max_bytes: int) -> bytes:
        """GET https://<host><path> (an SNS host already checked); the body, or `Untrusted` when it fails."""
        target = self.settings.sns_connect_to.get(host, host)
        try:
            async with self._http().stream("GET", f"https://{target}{path}", headers={"host": host},
                                           extensions={"sni_hostname": host}) as response:
                if response.status_code != 200:
                    raise Untrusted(f"{host} answered HTTP {response.status_code}")
                return await _capped(response, max_bytes)
        except httpx.HTTPError as exc:
            raise Untrusted(f"fetching from {host} failed: {type(exc).__name__}") from None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            context = ssl.create_default_context(cafile=str(self.settings.sns_tls_ca_file or certifi.where()))
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._client = httpx.AsyncClient(verify=context, timeout=TIMEOUT_S, follow_redirects=False,
                                             trust_env=False)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


async def _capped(response: Any, max_bytes: int) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > max_bytes:
            raise Untrusted(f"the answer is larger than {max_bytes} bytes")
    return bytes(data)
