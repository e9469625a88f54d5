"""Shared fixtures. Each fixtures module owns one boundary: a real Redis, a local Slack Web API, AWS (moto)."""

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.slack",
    "tests.fixtures.aws",
]
