"""The verdict: findings ranked by likely causality, a headline a responder can act on, a suggested severity."""

from __future__ import annotations

from checks.model import CheckResult, Status
from checks.verdict import build_verdict


def result(check: str, status: Status, summary: str, severity: str | None = None) -> CheckResult:
    return CheckResult(check=check, target="t", status=status, summary=summary, severity=severity)


def test_a_config_cause_heads_the_symptoms_it_explains() -> None:
    verdict = build_verdict("api", [
        result("aws.alarms", Status.fail, "api-5xx is in ALARM", "P1"),
        result("http.health", Status.fail, "All 5 samples timed out", "P0"),
        result("aws.alb_routes", Status.fail, "Subnet b routes 0.0.0.0/0 through a NAT gateway", "P1"),
        result("aws.lambda_config", Status.ok, "fine"),
    ])
    assert [f.check for f in verdict.findings] == ["aws.alb_routes", "http.health", "aws.alarms"]
    assert verdict.findings[0].explains == ["aws.alarms t", "http.health t"]
    assert verdict.headline.startswith("Subnet b routes 0.0.0.0/0 through a NAT gateway")
    assert verdict.severity == "P0" and verdict.status is Status.fail


def test_one_check_failing_on_two_targets_is_two_failures_explained() -> None:
    route = CheckResult(check="aws.alb_routes", target="api-alb", status=Status.fail, severity="P1",
                        summary="Subnet b routes 0.0.0.0/0 through a NAT gateway", resource="api-alb")
    probes = [CheckResult(check="http.health", target=url, status=Status.fail, severity="P0",
                          summary="All 5 samples timed out", evidence={"load_balancer": "api-alb"})
              for url in ("https://a.example/health", "https://b.example/health")]
    verdict = build_verdict("api", [route, *probes])
    assert verdict.findings[0].explains == ["http.health https://a.example/health",
                                            "http.health https://b.example/health"]
    assert verdict.headline.endswith("This explains 2 other failing check(s).")  # nothing left "below"


def test_a_check_that_could_not_run_or_a_hygiene_note_never_headlines_over_an_outage() -> None:
    verdict = build_verdict("api", [
        result("aws.nacl", Status.error, "Access denied: the bot's role needs ec2:DescribeNetworkAcls"),
        result("aws.lambda_config", Status.warn, "api runs on python3.8, deprecated", "P3"),
        result("http.health", Status.fail, "All 5 samples failed: connection refused.", "P0"),
    ])
    assert [f.check for f in verdict.findings] == ["http.health", "aws.lambda_config", "aws.nacl"]
    assert verdict.headline.startswith("All 5 samples failed: connection refused.")
    assert verdict.severity == "P0"


def test_healthy_and_unknown_runs_say_so_plainly() -> None:
    healthy = build_verdict("api", [result("http.health", Status.ok, "fine"), result("dns.resolve", Status.ok, "ok")])
    assert healthy.headline == "api looks healthy: all 2 checks passed." and healthy.severity is None
    blind = build_verdict("api", [result("aws.nacl", Status.error, "Access denied"), result("http.health", Status.ok, "ok")])
    assert blind.headline == "Could not complete 1 of 2 checks for api: Access denied"
    assert blind.status is Status.error and blind.severity is None
