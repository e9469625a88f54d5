"""tls.certificate: the certificate a TLS endpoint serves — days left, and whether clients will trust it.

The certificate is read WITHOUT trusting it (an expired or self-signed certificate is exactly what must be reported),
and separately the handshake is verified the way clients do: the system trust store, and the name. Expiry is
computed from `ctx.now`, so it is the diagnosis time that counts and tests can move the clock.

Thresholds (runbook): expired → fail P0; not valid yet or < 3 days → fail P1; untrusted chain or wrong name →
fail P1 (P1, not P0: an internal endpoint on a private CA the bot does not carry would otherwise page as an outage);
< 14 days → warn P2; < 30 days → warn P3 (hygiene: automated renewal normally happens before that).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from checks.model import CheckResult, Severity, Status
from checks.net import guard
from checks.net.probe import classify_connect_error, time_left, with_route
from checks.registry import CheckContext, check
from checks.services import TlsTarget

if TYPE_CHECKING:  # imported when a TLS check first runs, not when the checks are registered
    from cryptography import x509

CHECK_LIMIT_S = 15.0
RESOLVE_TIMEOUT_S = 3.0
HANDSHAKE_TIMEOUT_S = 5.0

# OpenSSL verify codes: the dates are judged against ctx.now instead; the name ones get their own summary.
_DATE_ERRORS = {9, 10}  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED
_NAME_ERRORS = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH

# (days left below which, status, severity), most urgent first
EXPIRY_RULES: list[tuple[float, Status, Severity]] = [
    (3, Status.fail, "P1"),
    (14, Status.warn, "P2"),
    (30, Status.warn, "P3"),
]

_RENEW_HINT = ("Renew and deploy the certificate (ACM: check the renewal status and that the DNS validation "
               "records still exist; elsewhere: the cert-manager/ACME job and where it deploys).")


class _HandshakeFailed(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@check("tls.certificate", timeout_s=CHECK_LIMIT_S)
async def tls_certificate(target: TlsTarget, ctx: CheckContext) -> CheckResult:
    """TLS: certificate expiry, chain and name."""
    ends_at = time.monotonic() + time_left(ctx.remaining(), CHECK_LIMIT_S)
    try:
        addresses = await guard.allowed_addresses(target.host, target.port, ctx, timeout=RESOLVE_TIMEOUT_S)
    except guard.NameNotResolved as exc:
        return CheckResult(status=Status.error, resource=str(target),
                           summary=f"Could not read the certificate of {target}: {target.host} does not resolve "
                                   f"({exc}).")
    except guard.TargetRefused as exc:
        return CheckResult(status=Status.error, summary=str(exc), resource=str(target))

    address = with_route(addresses)[0]
    verify_error: ssl.SSLCertVerificationError | None = None
    try:
        try:
            trusting = await asyncio.to_thread(ssl.create_default_context)  # reads the CA store: off the loop
            der, session = await _fetch(address, target, trusting, ends_at)
        except ssl.SSLCertVerificationError as exc:
            verify_error = exc
            der, session = await _fetch(address, target, _unverified_context(), ends_at)
    except _HandshakeFailed as exc:
        return _handshake_failure(target, address, exc)
    from cryptography import x509

    certificate = x509.load_der_x509_certificate(der)
    return judge(target, address, certificate, verify_error, _aware(ctx.now), session)


async def _fetch(address: str, target: TlsTarget, context: ssl.SSLContext, ends_at: float) -> tuple[bytes, dict]:
    """Handshake with address:port as `target.host` (SNI) and return the peer certificate (DER) and session facts."""
    timeout = max(0.05, min(HANDSHAKE_TIMEOUT_S, ends_at - time.monotonic()))
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(address, target.port, ssl=context, server_hostname=target.host),
            timeout=timeout,
        )
    except ssl.SSLCertVerificationError:
        raise
    except TimeoutError as exc:
        raise _HandshakeFailed("timeout", f"no completed handshake within {timeout:.1f} s") from exc
    except OSError as exc:  # includes ssl.SSLError
        kind, detail = classify_connect_error([exc])
        raise _HandshakeFailed(kind, detail) from exc
    try:
        tls = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True)
        session = {"tls_version": tls.version(), "cipher": (tls.cipher() or ("",))[0]}
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), timeout=1.0)
        except (OSError, TimeoutError):
            pass
    if not der:
        raise _HandshakeFailed("tls_error", "the server sent no certificate")
    return der, session


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _handshake_failure(target: TlsTarget, address: str, exc: _HandshakeFailed) -> CheckResult:
    evidence = {"host": target.host, "port": target.port, "address": address, "outcome": exc.kind,
                "error": str(exc)}
    if exc.kind == "tls_error":
        return CheckResult(status=Status.fail, severity="P1", resource=str(target), evidence=evidence,
                           summary=f"The TLS handshake with {target} fails: {exc}.",
                           hint="Check that the port serves TLS at all (not plain HTTP) and the listener's TLS "
                                "policy (protocol versions, ciphers).")
    return CheckResult(status=Status.error, resource=str(target), evidence=evidence,
                       summary=f"Could not read the certificate of {target} at {address}: {exc}.",
                       hint="tcp.connect and http.health say whether the endpoint is reachable at all.")


def judge(target: TlsTarget, address: str, cert: x509.Certificate, verify_error: ssl.SSLCertVerificationError | None,
          now: datetime, session: dict[str, Any]) -> CheckResult:
    days_left = (cert.not_valid_after_utc - now).total_seconds() / 86400
    trust_error = verify_error if verify_error is not None and verify_error.verify_code not in _DATE_ERRORS else None
    evidence = {
        "host": target.host, "port": target.port, "address": address,
        **describe(cert),
        "days_left": round(days_left, 1),
        "verified": verify_error is None,
        "verify_error": (verify_error.verify_message or str(verify_error)) if verify_error else None,
        **session,
    }
    base: dict[str, Any] = {"resource": str(target), "evidence": evidence}
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    if days_left <= 0:
        return CheckResult(status=Status.fail, severity="P0", hint=_RENEW_HINT, **base,
                           summary=f"The certificate of {target} expired {_in(-days_left)} ago ({until}); "
                                   "clients reject it.")
    if cert.not_valid_before_utc > now:
        return CheckResult(status=Status.fail, severity="P1", **base,
                           summary=f"The certificate of {target} is not valid until "
                                   f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M UTC}.",
                           hint="It was deployed before its start date (or the server clock is off).")
    if trust_error is not None:
        return _untrusted(target, trust_error, evidence, base)
    for limit, status, severity in EXPIRY_RULES:
        if days_left < limit:
            return CheckResult(status=status, severity=severity, hint=_RENEW_HINT, **base,
                               summary=f"The certificate of {target} expires in {_in(days_left)} ({until}).")
    return CheckResult(status=Status.ok, **base,
                       summary=f"The certificate of {target} is trusted and valid for {int(days_left)} more days "
                               f"(until {until}).")


def _untrusted(target: TlsTarget, error: ssl.SSLCertVerificationError, evidence: dict[str, Any],
               base: dict[str, Any]) -> CheckResult:
    if error.verify_code in _NAME_ERRORS:
        names = ", ".join(evidence["san"]) or evidence["subject"]
        return CheckResult(status=Status.fail, severity="P1", **base,
                           summary=f"The certificate served on {target} does not cover {target.host} "
                                   f"(it is for {names}); clients reject it.",
                           hint="The listener serves the wrong certificate: attach the one for this name (and on "
                                "a shared listener, check the SNI certificate list).")
    return CheckResult(status=Status.fail, severity="P1", **base,
                       summary=f"The certificate chain of {target} does not verify against the system trust store: "
                               f"{error.verify_message or error}.",
                       hint="Serve the full chain (leaf plus intermediates) issued by a CA clients trust; a "
                            "self-signed or private-CA certificate only works for clients that carry that CA.")


def describe(cert: x509.Certificate) -> dict[str, Any]:
    """The facts about a certificate a responder looks at."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.DNSName), *map(str, san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        names = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "san": names,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "serial": format(cert.serial_number, "x"),
        "self_signed": cert.issuer == cert.subject,
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def _in(days: float) -> str:
    if days < 1:
        return f"{max(1, int(days * 24))} hours"
    return f"{int(days)} day{'s' if int(days) != 1 else ''}"


def _aware(now: datetime) -> datetime:
    return now if now.tzinfo else now.replace(tzinfo=UTC)

