"""Charts in the thread: a failing metric check (ALB 5xx in moto) gets a PNG of the series it judged, shared with
Slack's files v2 upload in its reply's thread; DIAGNOSE_CHARTS=false leaves only the text."""

from __future__ import annotations

import asyncio
import io
import struct
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from PIL import Image

from bot.diagnosis.render.chart import COLOURS, MARKER_COLOURS, PLOT, SIZE, render_png
from checks.aws.changes import parse_aws_time
from checks.model import Marker, Series
from tests.app_harness import running_bot
from tests.aws_lambda_scenarios import create_function, deploy_version, put_log_lines
from tests.aws_scenarios import REGION, build_alb, build_network, put_alb_traffic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SERVICES = {"web": {"aws": {"region": REGION, "load_balancers": ["web"]}}}


def png_size(content: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the file is a whole PNG (signature … IEND)."""
    assert content.startswith(PNG_SIGNATURE), content[:16]
    assert content[12:16] == b"IHDR" and content.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", content[16:24])


def failing_alb(aws) -> None:
    """Six minutes of traffic, the last four mostly 502s from the load balancer."""
    lb = build_alb(aws, build_network(aws))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for minutes_ago in range(6, 0, -1):
        errors = 400 if minutes_ago <= 4 else 0
        put_alb_traffic(aws, lb, at=now - timedelta(minutes=minutes_ago), requests=1000, elb_5xx=errors)


async def diagnose(bot) -> tuple[object, list]:
    await bot.command("/diagnose", "web")
    await bot.settle()
    [parent] = bot.parents()
    return parent, bot.local.replies(bot.channel, parent.ts)


async def test_failing_5xx_check_shares_a_png_chart_in_its_thread(aws, local_slack, redis_url, tmp_path):
    failing_alb(aws)
    async with running_bot(local_slack, redis_url, tmp_path, services=SERVICES) as bot:
        parent, replies = await diagnose(bot)

        assert any("aws.elb_5xx" in r.text for r in replies), [r.text for r in replies]
        [shared] = local_slack.files(bot.channel)
        assert shared["name"] == "aws.elb_5xx-web.png" and shared["mimetype"] == "image/png"
        width, height = png_size(shared["content"])
        assert 300 <= width <= 2000 and 150 <= height <= 1200, (width, height)
        assert len(shared["content"]) < 200_000
        assert "5xx ratio per minute" in shared["alt_txt"] and "threshold 5%" in shared["alt_txt"]
        [[share]] = shared["shares"]["public"].values()
        assert share["thread_ts"] == parent.ts  # in the diagnosis thread, not the channel
        steps = [c.method for c in local_slack.calls
                 if c.method in ("files.getUploadURLExternal", "upload", "files.completeUploadExternal")]
        assert steps == ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]


async def test_charts_off_leaves_the_text_reply_and_uploads_nothing(aws, local_slack, redis_url, tmp_path):
    failing_alb(aws)
    async with running_bot(local_slack, redis_url, tmp_path, services=SERVICES, diagnose_charts=False) as bot:
        _, replies = await diagnose(bot)

        assert any("aws.elb_5xx" in r.text for r in replies)
        assert local_slack.files() == []
        assert local_slack.calls_to("files.getUploadURLExternal") == []


async def test_a_healthy_metric_check_gets_no_chart(aws, local_slack, redis_url, tmp_path):
    lb = build_alb(aws, build_network(aws))
    put_alb_traffic(aws, lb, at=datetime.now(UTC) - timedelta(minutes=2), requests=1000, target_5xx=3)
    async with running_bot(local_slack, redis_url, tmp_path, services=SERVICES) as bot:
        _, replies = await diagnose(bot)

        assert any("aws.elb_5xx" in r.text for r in replies)
        assert local_slack.files() == []


def pixels_of(png: bytes, colour: tuple[int, int, int]) -> list[tuple[int, int]]:
    """(x, y) of every pixel drawn exactly in `colour`."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    raw, wanted = image.tobytes(), bytes(colour)
    found = (i // 3 for i in range(0, len(raw), 3) if raw[i:i + 3] == wanted)
    return [(i % image.width, i // image.width) for i in found]


def rising_series() -> Series:
    """Quiet, a deploy, then errors climbing past a threshold of 5."""
    start = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)
    points = [(start + timedelta(minutes=i), float(v)) for i, v in enumerate([0, 0, 0, 1, 9, 20, 30])]
    return Series(metric="5xx ratio per minute", unit="%", points=points, threshold=5.0,
                  markers=[Marker(at=points[2][0], label="deploy v42", kind="deploy"),
                           Marker(at=points[4][0], label="first 5xx over 5 %", kind="first_breach")])


def test_chart_draws_the_series_against_a_dashed_threshold_and_the_markers_in_time_order() -> None:
    png = render_png(rising_series())

    threshold = pixels_of(png, COLOURS["threshold"])
    rows = {y for _, y in threshold}
    row = max(rows, key=lambda y: sum(1 for _, py in threshold if py == y))
    dashes = sorted(x for x, y in threshold if y == row)
    gaps = sum(1 for a, b in zip(dashes, dashes[1:]) if b - a > 1)
    assert len(dashes) > SIZE[0] // 3 and gaps > 20, (len(dashes), gaps)  # across the plot, and dashed
    series = pixels_of(png, COLOURS["series"])
    first_x, last_x = min(x for x, _ in series), max(x for x, _ in series)
    assert all(y > row for x, y in series if x == first_x)  # 0 % is drawn below the threshold of 5 %
    assert all(y < row for x, y in series if x == last_x)  # 30 % is drawn above it
    deploy, breach = ({x for x, _ in pixels_of(png, MARKER_COLOURS[kind])} for kind in ("deploy", "first_breach"))
    assert deploy and breach and min(deploy) < min(breach) and first_x < min(deploy) < last_x


def test_chart_is_640_by_260_and_survives_dollar_signs_long_labels_and_a_single_point() -> None:
    start = datetime(2026, 11, 3, 23, 58, tzinfo=UTC)
    points = [(start + timedelta(minutes=i), float(v)) for i, v in enumerate([0, 0, 1, 30, 45, 50])]
    series = Series(metric="cost $ per $minute", unit="ms", points=points, threshold=5.0,
                    markers=[Marker(at=points[1][0], label="deploy v7 $HOME " + "x" * 200, kind="deploy"),
                             Marker(at=points[5][0], label="KeyError: 'user_id'", kind="first_error")])
    single = Series(metric="Lambda throttles per minute", points=[(start, 0.0)])

    assert png_size(render_png(series)) == SIZE == (640, 260)
    assert png_size(render_png(single)) == SIZE
    assert pixels_of(render_png(single), COLOURS["series"])  # the one point is still drawn


def test_the_http_ack_path_does_not_import_pillow() -> None:
    code = ("import sys; import bot.app.http_server, bot.diagnosis.run, bot.diagnosis.charts, handlers; "
            "assert 'PIL' not in sys.modules, 'Pillow imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr[-2000:]


async def test_lambda_metrics_keep_the_minutes_they_judged_as_the_series(aws) -> None:
    from checks.aws.lambdas import lambda_metrics
    from checks.registry import CheckContext
    from checks.services import AwsSpec, ServiceSpec
    from tests.aws_lambda_scenarios import create_function, put_lambda_metrics

    create_function(aws, "api-handler")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    put_lambda_metrics(aws, "api-handler", now - timedelta(minutes=9), invocations=50)
    put_lambda_metrics(aws, "api-handler", now - timedelta(minutes=4), invocations=50, throttles=7)
    ctx = CheckContext(service_name="api", service=ServiceSpec(aws=AwsSpec(lambda_functions=["api-handler"])),
                       now=now, http=None, aws=aws)  # type: ignore[arg-type]

    result = await lambda_metrics("api-handler", ctx)

    assert result.status.is_problem and result.series is not None
    assert result.series.metric == "Lambda throttles per minute" and result.series.threshold == 0
    assert [v for _, v in result.series.points] == [0.0, 7.0]
    [marker] = result.series.markers
    assert marker.kind == "first_breach" and marker.at == now - timedelta(minutes=4)
    assert png_size(render_png(result.series)) == (640, 260)


def marker_columns(png: bytes, kind: str) -> list[int]:
    """The x of each dotted vertical drawn in `kind`'s colour (a column holding many of its pixels, not a label)."""
    xs = [x for x, _ in pixels_of(png, MARKER_COLOURS[kind])]
    return sorted(x for x in set(xs) if xs.count(x) >= (PLOT[3] - PLOT[1]) // 4)


async def test_the_chart_marks_the_runs_deploy_and_first_error_found_by_the_other_checks(aws, local_slack, redis_url,
                                                                                         tmp_path):
    """ALB 5xx climbing, a Lambda deploy (the change check's scenario) and errors in its log right after: the 5xx
    chart, shared once the verdict is built, marks the deploy and the first error beside its own first breach."""
    failing_alb(aws)
    create_function(aws, "api-handler")
    deploy_version(aws, "api-handler", "build 41")
    v2 = deploy_version(aws, "api-handler", "build 42")
    deployed_at = parse_aws_time(v2["LastModified"])
    first_error = deployed_at + timedelta(seconds=3)  # four pixels right of the deploy on a 7-minute chart
    put_log_lines(aws, "/aws/lambda/api-handler", [
        (first_error + timedelta(seconds=s), f"[ERROR] KeyError: 'user_id' in request {s}") for s in range(3)])
    # The checks read logs up to their start: wait until the errors (stamped after moto's deploy) are past.
    await asyncio.sleep(max((first_error + timedelta(seconds=3) - datetime.now(UTC)).total_seconds(), 0))
    services = {"web": {"aws": {"region": REGION, "load_balancers": ["web"], "lambda_functions": ["api-handler"],
                                "log_groups": ["/aws/lambda/api-handler"]}}}
    async with running_bot(local_slack, redis_url, tmp_path, services=services) as bot:
        parent, replies = await diagnose(bot)

        [shared] = [f for f in local_slack.files(bot.channel) if f["name"] == "aws.elb_5xx-web.png"]
        alt = shared["alt_txt"]
        assert f"deploy api-handler v2 at {deployed_at:%H:%M} UTC" in alt, alt
        assert f"first error: [ERROR] KeyError: 'user_id' in request <N> at {first_error:%H:%M} UTC" in alt, alt
        assert "first breach: first minute over 5 %" in alt, alt
        [[share]] = shared["shares"]["public"].values()
        assert share["thread_ts"] == parent.ts
        assert any("aws.elb_5xx" in r.text for r in replies)
        png = shared["content"]
        [breach], [deploy], [error] = (marker_columns(png, k) for k in ("first_breach", "deploy", "first_error"))
        assert breach < deploy < error, (breach, deploy, error)


def test_run_markers_prefer_the_suspect_deploy_and_leave_off_moments_far_outside_the_series() -> None:
    from checks.chartmarks import with_run_markers
    from checks.model import CheckResult, Status

    series = rising_series()  # 14:00–14:06, with its own deploy and first-breach markers
    at = series.points[3][0]
    change = {"kind": "lambda-version", "name": "api-handler v7", "at": at.isoformat(), "resource": "v7"}
    old = {**change, "name": "api-handler v6", "at": (at - timedelta(hours=5)).isoformat()}
    later = {**change, "name": "api-handler v8", "at": (at + timedelta(minutes=2)).isoformat()}
    changes = CheckResult(status=Status.fail, summary="", evidence={"changes": [old, change, later], "suspect": change,
                                                                    "first_error_at": (at - timedelta(hours=3)).isoformat()})
    logs = CheckResult(status=Status.fail, summary="", evidence={"first_error_at": "not a time"})

    marked = with_run_markers(series, [changes, logs])

    assert [(m.kind, m.label) for m in marked.markers] == [
        ("deploy", "deploy v42"), ("deploy", "deploy api-handler v7"), ("first_breach", "first 5xx over 5 %")]
    assert with_run_markers(series, []) == series
