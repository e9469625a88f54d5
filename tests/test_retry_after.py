"""Retry-After as the paging providers, Slack's client, the trackers and the back-fill read it (bot/retry.py): one
reading for all."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.retry import retry_after_s
from bot.writeup.backfill import _retry_after
from bot.writeup.trackers.http import rate_limit_wait


def test_seconds_in_any_header_case_and_shape():
    assert retry_after_s(httpx.Headers({"Retry-After": "7"})) == 7.0  # a provider's, through httpx
    assert retry_after_s({"Retry-After": ["3"]}) == 3.0  # slack_sdk keeps each header as a list
    assert retry_after_s({"retry-after": "-2"}) == 0.0


def test_repeated_headers_read_as_their_first_value():
    repeated = httpx.Headers([("Retry-After", "5"), ("Retry-After", "9")])
    assert repeated["retry-after"] == "5, 9"  # what a tracker's response hands over
    assert retry_after_s(repeated) == 5.0
    date = formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_s(httpx.Headers([("Retry-After", date), ("Retry-After", date)])) <= 30


def test_an_http_date_is_the_seconds_until_it():
    assert 55 <= retry_after_s({"Retry-After": formatdate(time.time() + 60, usegmt=True)}) <= 60


def test_absent_or_unreadable_is_none():
    assert retry_after_s({}) is None
    assert retry_after_s({"Retry-After": []}) is None
    assert retry_after_s({"Retry-After": "soon"}) is None
    for endless in ("nan", "inf", "-inf", "NaN, 5"):  # floats Python reads, but no wait anyone could keep
        assert retry_after_s({"Retry-After": endless}) is None, endless


def test_a_tracker_waits_out_an_http_date_retry_after():
    """Jira may send Retry-After as an HTTP date; read as seconds only, it fell back to the 60 s secondary wait."""
    response = httpx.Response(429, headers={"Retry-After": formatdate(time.time() + 20, usegmt=True)})
    assert 15 <= rate_limit_wait(response) <= 20
    assert rate_limit_wait(httpx.Response(429, headers={"retry-after": "4"})) == 4.0


def _slack_429(headers: dict) -> SlackApiError:
    response = AsyncSlackResponse(client=None, http_verb="POST", api_url="https://slack.test/api/x", req_args={},
                                  data={"ok": False, "error": "ratelimited"}, headers=headers, status_code=429)
    return SlackApiError("ratelimited", response)


def test_the_backfill_reads_slacks_retry_after_and_keeps_its_floor_and_default():
    assert _retry_after(_slack_429({"Retry-After": ["12"]})) == 12.0
    assert _retry_after(_slack_429({"retry-after": "0"})) == 1.0  # never a busy loop against Slack
    assert _retry_after(_slack_429({})) == 30.0  # a 429 without the header still waits
