"""`POST /hooks/sns`: Amazon SNS HTTPS deliveries (raw message delivery off) from the topics in SNS_TOPIC_ARNS.

Every message is verified before anything else: its topic must be allowed (else 403), its SignatureVersion 1
(SHA1withRSA) or 2 (SHA256withRSA) signature must check against the certificate at SigningCertURL, fetched and
checked by bot/alerts/sns_fetch.py (else 401). Then:

- SubscriptionConfirmation: the SubscribeURL is visited (same SNS-host rule, and the topic's own region), which
  confirms the subscription;
- Notification: the message is a CloudWatch alarm (bot/alerts/cloudwatch.py) or it is ignored with a 200;
- UnsubscribeConfirmation: nothing is done (resubscribing is a person's decision).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import TYPE_CHECKING, Literal

from bot.alerts import cloudwatch
from bot.alerts.http import Refused, Reply, Request
from bot.alerts.sns_fetch import CONFIRM_MAX_BYTES, Untrusted
from bot.incidents.notice import AlertNotice
from checks.schema import Record

if TYPE_CHECKING:
    from bot.alerts.service import Alerts

HASHES = {"1": "SHA1", "2": "SHA256"}  # SignatureVersion → cryptography's hash class
# What is signed, per message type, in this (byte-sorted) order; absent optional keys are skipped.
SIGNED_KEYS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


class Envelope(Record):
    Type: Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
    MessageId: str
    TopicArn: str
    Message: str
    Timestamp: str
    SignatureVersion: str
    Signature: str
    SigningCertURL: str
    Subject: str | None = None
    Token: str | None = None
    SubscribeURL: str | None = None

    def canonical(self) -> bytes:
        values = {key: getattr(self, key) for key in SIGNED_KEYS[self.Type]}
        lines = [f"{key}\n{value}\n" for key, value in values.items() if value is not None]
        return "".join(lines).encode()


def configured(ax: Alerts) -> bool:
    return bool(ax.settings.sns_topic_arns)


def envelope(request: Request) -> Envelope:
    return request.model(Envelope, "not an SNS message (raw delivery must be off): ")


async def authenticate(ax: Alerts, request: Request) -> None:
    message = envelope(request)
    if message.TopicArn not in ax.settings.sns_topic_arns:
        raise Refused(403, "the topic is not in SNS_TOPIC_ARNS")
    if request.header("x-amz-sns-topic-arn") not in ("", message.TopicArn):
        raise Refused(400, "the x-amz-sns-topic-arn header and the body disagree")
    if message.SignatureVersion not in HASHES:
        raise Untrusted("SignatureVersion must be 1 or 2")
    key = await ax.sns.public_key(message.SigningCertURL)
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        signature = base64.b64decode(message.Signature, validate=True)
        key.verify(signature, message.canonical(), padding.PKCS1v15(),
                   getattr(hashes, HASHES[message.SignatureVersion])())
    except (InvalidSignature, binascii.Error, ValueError):
        raise Untrusted("the message signature does not verify") from None
    _check_age(message.Timestamp, ax.settings.sns_max_age_s)


def _check_age(timestamp: str, max_age_s: float) -> None:
    """A signed message is genuine but may be old: SNS's Timestamp (signed) says when it was published."""
    try:
        sent = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        age_s = (dt.datetime.now(dt.UTC) - sent).total_seconds()
    except (ValueError, TypeError):
        raise Untrusted("the message Timestamp is not an ISO 8601 time") from None
    if age_s > max_age_s or age_s < -300:
        raise Untrusted(f"the message was published {age_s:.0f} s ago, outside SNS_MAX_AGE_S ({max_age_s:.0f} s)")


async def parse(ax: Alerts, request: Request) -> list[AlertNotice] | Reply:
    message = envelope(request)
    if message.Type == "SubscriptionConfirmation":
        return await _confirm(ax, message)
    if message.Type == "UnsubscribeConfirmation":
        return Reply(200, {"action": "ignored", "reason": "unsubscribed; subscribe again from AWS to resume"})
    return await cloudwatch.parse_message(ax, message.Message)


async def _confirm(ax: Alerts, message: Envelope) -> Reply:
    host, path = ax.sns.sns_url(message.SubscribeURL or "")
    if host.split(".")[1] != message.TopicArn.split(":")[3]:
        raise Untrusted("the SubscribeURL is not in the topic's region")
    try:
        await ax.sns.get(host, path, CONFIRM_MAX_BYTES)
    except Refused as exc:  # SNS retries a 5xx: the confirmation may work next time
        return Reply(502, {"error": f"confirming the subscription failed: {exc}"})
    return Reply(200, {"action": "subscribed", "topic": message.TopicArn})
