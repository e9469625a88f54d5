"""Retry-After as the paging providers and Slack's client read it (bot/retry.py): one reading for both."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx

from bot.retry import retry_after_s


def test_seconds_in_any_header_case_and_shape():
    assert retry_after_s(httpx.Headers({"Retry-After": "7"})) == 7.0  # a provider's, through httpx
    assert retry_after_s({"Retry-After": ["3"]}) == 3.0  # slack_sdk keeps each header as a list
    assert retry_after_s({"retry-after": "-2"}) == 0.0


def test_an_http_date_is_the_seconds_until_it():
    assert 55 <= retry_after_s({"Retry-After": formatdate(time.time() + 60, usegmt=True)}) <= 60


def test_absent_or_unreadable_is_none():
    assert retry_after_s({}) is None
    assert retry_after_s({"Retry-After": []}) is None
    assert retry_after_s({"Retry-After": "soon"}) is None
