"""The terminal chat shows what Slack would show, not Slack's wire format."""

from __future__ import annotations

import time

from bot.app.terminal_render import Names, Style, blocks, mrkdwn
from bot.diagnosis.render.slack import result_message
from checks.model import CheckResult, Status

NAMES = Names(user={"U1": "alice"}.get, channel={"C1": "inc-1-checkout"}.get)
ANSI = Style(ansi=True)


def test_emphasis_is_plain_text_without_a_terminal_and_styles_with_one() -> None:
    assert mrkdwn("*INC-1* is _P1_ and ~P2~") == "INC-1 is P1 and P2"
    assert mrkdwn("*INC-1* is _P1_", style=ANSI) == "\x1b[1mINC-1\x1b[22m is \x1b[3mP1\x1b[23m"


def test_markers_inside_words_and_code_stay_as_typed() -> None:
    assert mrkdwn("dns_resolve and 2*3*4") == "dns_resolve and 2*3*4"
    assert mrkdwn("run `a_b *c*` now") == "run a_b *c* now"


def test_mentions_and_channels_read_as_names() -> None:
    assert mrkdwn("<@U1> opened <#C1>", NAMES) == "@alice opened #inc-1-checkout"
    assert mrkdwn("<@U9> in <#C9|ops>", NAMES) == "@U9 in #ops"
    assert mrkdwn("<!here> <!subteam^S1|@sre>") == "@here @sre"


def test_links_show_label_and_address_and_entities_are_unescaped() -> None:
    assert mrkdwn("<https://x.test/a?b=1&amp;c=2|the runbook>") == "the runbook (https://x.test/a?b=1&c=2)"
    assert mrkdwn("<https://x.test/>") == "https://x.test/"
    assert mrkdwn("a &lt;b&gt; &amp; c") == "a <b> & c"


def test_dates_are_local_time_and_a_bad_date_falls_back() -> None:
    expected = time.strftime("%a %d %b %H:%M", time.localtime(1700000000))
    assert mrkdwn("since <!date^1700000000^{time}|10:00 UTC>") == f"since {expected}"
    assert mrkdwn("since <!date^soon^{time}|10:00 UTC>") == "since 10:00 UTC"


def test_known_emoji_codes_become_emoji_and_others_stay() -> None:
    assert mrkdwn(":x: failed :made_up: at 14:04:09") == "❌ failed :made_up: at 14:04:09"


def test_a_code_block_is_an_indented_verbatim_block() -> None:
    assert mrkdwn("Evidence:\n```host  a&lt;b\n*n*  2```") == "Evidence:\n\n  │ host  a<b\n  │ *n*  2\n"


def test_a_checks_evidence_is_an_aligned_table() -> None:
    result = CheckResult(check="http.health", target="http://127.0.0.1/checkout", status=Status.fail,
                         summary="All 2 samples failed: HTTP 502", duration_ms=40,
                         evidence={"url": "http://127.0.0.1/checkout", "status_counts": {"502": 2},
                                   "samples": [{"n": 1, "status": 502}], "ok": False})
    text, message_blocks = result_message(result)
    shown = blocks(message_blocks, text)
    assert "  │ url                http://127.0.0.1/checkout" in shown
    assert "  │ status_counts.502  2" in shown
    assert "  │ samples[1]         n=1 status=502" in shown
    assert "{" not in shown and "*" not in shown


def test_blocks_show_header_sections_fields_and_context_but_not_buttons() -> None:
    message = [{"type": "header", "text": {"type": "plain_text", "text": "INC-1 :fire:"}},
               {"type": "section", "text": {"type": "mrkdwn", "text": "*Checkout down*"},
                "fields": [{"type": "mrkdwn", "text": "*Sev* P1"}]},
               {"type": "context", "elements": [{"type": "mrkdwn", "text": "by <@U1>"}]},
               {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Ack"}}]}]
    assert blocks(message, "fallback", NAMES) == "INC-1 🔥\nCheckout down\nSev P1\nby @alice"
    assert blocks(None, "*fallback*") == "fallback"
