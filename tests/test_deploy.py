"""The Dockerfile and docker-compose.yml, as far as a machine without Docker can check them: the image's own
command and environment run here, and the compose file read as data.

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
