"""The Dockerfile, docker-compose.yml and docker-compose.ha.yml, as far as a machine without Docker can check them: the
image's own command and environment run here, the compose files read as data, the HA variant's Redis and Sentinel
configs run by the local redis-server.

Docker itself is not run by the suite (CI has no daemon); what a container would do is what `chatops` does with
the image's ENV, ENTRYPOINT and CMD."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from bot.app.redis_server import find_redis_server, free_port
from bot.settings import Settings
from tests.redis_topologies import client, wait_until

ROOT = Path(__file__).resolve().parent.parent


def dockerfile_instructions(name: str) -> list[str]:
    """The arguments of every `NAME` instruction of the final stage (continuation lines joined)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(f"{name} ")]


def image_environment() -> dict[str, str]:
    pairs = [pair for args in dockerfile_instructions("ENV") for pair in shlex.split(args)]
    return dict(pair.split("=", 1) for pair in pairs)


def test_the_images_default_command_without_slack_variables_stops_with_one_line(tmp_path: Path) -> None:
    """A container started without its tokens: one line and exit 2, not a terminal chat on /dev/null that ends,
    exits 0 and is restarted forever."""
    command = json.loads(dockerfile_instructions("ENTRYPOINT")[-1]) + json.loads(dockerfile_instructions("CMD")[-1])
    assert command[0] == "chatops"
    env = {**image_environment(), "PATH": os.environ["PATH"], "CHATOPS_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "bot", *command[1:]], stdin=subprocess.DEVNULL, env=env,
                            capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        ("chatops: CHATOPS_HEADLESS is on, so there is no terminal chat: set SLACK_BOT_TOKEN with SLACK_APP_TOKEN "
         "(Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode)")]


def test_compose_gives_the_bot_and_every_worker_your_services_file_not_the_example() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    for name in ("bot", "worker"):
        [mount] = services[name]["volumes"]
        assert mount["source"] == "${SERVICES_FILE_HOST:-./services.yml}" and mount["read_only"]
        assert mount["bind"] == {"create_host_path": False}  # a missing file is an error, not an empty directory
        assert services[name]["environment"]["SERVICES_FILE"] == mount["target"]
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert "services.example.yml" not in json.dumps(services)


def ha_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.ha.yml").read_text(encoding="utf-8"))["services"]


def test_ha_compose_gives_the_bot_and_workers_only_the_sentinels() -> None:
    services = ha_compose()
    sentinels = sorted(name for name in services if name.startswith("sentinel-"))
    assert len(sentinels) == 3
    for name in ("bot", "worker"):
        env = services[name]["environment"]
        assert "REDIS_URL" not in env
        settings = Settings.from_env(redis_sentinels=env["REDIS_SENTINELS"],
                                     redis_sentinel_master=env["REDIS_SENTINEL_MASTER"])
        assert settings.sentinel_addresses == [(s, 26379) for s in sentinels] and settings.wait_replicas == 1
        assert services[name]["volumes"][0]["source"] == "${SERVICES_FILE_HOST:-./services.yml}"
    primary = services["redis-primary"]["command"]
    assert arg(primary, "--min-replicas-to-write") == "1" and arg(primary, "--min-replicas-max-lag") == "10"
    assert arg(primary, "--appendonly") == "yes" and arg(primary, "--maxmemory-policy") == "noeviction"
    assert services["redis-replica"]["command"][-3:] == ["--replicaof", "redis-primary", "6379"]


def arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_ha_compose_configs_start_a_real_primary_and_a_sentinel_that_watches_it(tmp_path: Path) -> None:
    """The primary's flags and the sentinel's generated config, run by the local redis-server (hostnames swapped
    for loopback): both start, and the sentinel names the primary."""
    services, binary = ha_compose(), find_redis_server()
    primary_port, sentinel_port = free_port(), free_port()
    primary = [binary, *services["redis-primary"]["command"][1:], "--port", str(primary_port), "--bind", "127.0.0.1",
               "--dir", str(tmp_path)]
    script = services["sentinel-1"]["command"][2]
    for container, local in (("/tmp/sentinel.conf", str(tmp_path / "sentinel.conf")),
                             ("redis-primary 6379", f"127.0.0.1 {primary_port}"),
                             ("port 26379", f"port {sentinel_port}"), ("exec redis-sentinel", f"exec {binary}")):
        assert container in script
        script = script.replace(container, local)
    procs = [subprocess.Popen(primary, stdout=subprocess.DEVNULL, cwd=tmp_path)]
    try:
        wait_until(lambda: client(primary_port).ping(), "the HA primary answers", 10)
        procs.append(subprocess.Popen(["sh", "-c", script.rstrip() + " --sentinel --bind 127.0.0.1"],
                                      stdout=subprocess.DEVNULL, cwd=tmp_path))
        wait_until(lambda: client(sentinel_port).sentinel_get_master_addr_by_name("chatops")[1] == primary_port,
                   "the sentinel names the primary", 10)
        assert client(primary_port).config_get("min-replicas-*") == {"min-replicas-to-write": "1",
                                                                    "min-replicas-max-lag": "10"}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(5)
