"""The README's first Quickstart command, run as a newcomer runs it: parsed from the README, in a fresh copy of
the repository, with an empty environment, typing `/diagnose list` and `/quit` into the terminal chat.

The suite otherwise always hands the bot an absolute data directory and a Redis of its own, so a first run that
crashes (a relative path, a missing file that only a clone lacks) would pass every other test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NOT_IN_A_CLONE = shutil.ignore_patterns(".git", ".venv", ".chatops", "__pycache__", "*.egg-info", ".pytest_cache")


def quickstart_command(readme: str) -> str:
    """The first line of the first ```sh block under "## Quickstart"."""
    section = readme.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return block.splitlines()[0]


def fresh_copy(dest: Path) -> Path:
    """What a clone holds: the files git tracks, as they are in this working tree. New files not yet added but
    not ignored are copied too, so a working tree mid-change tests what it would commit; in CI the two are the
    same. Outside a git checkout: the tree without what a clone would not have."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    if listed.returncode != 0:
        shutil.copytree(ROOT, dest, ignore=NOT_IN_A_CLONE)
        return dest
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def run_as_newcomer(command: str, cwd: Path, typed: str) -> subprocess.CompletedProcess:
    """`bash -c` with nothing but PATH and a HOME of its own: no REDIS_URL, CHATOPS_DATA_DIR or Slack variables."""
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd.parent / "home")}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, input=typed, capture_output=True,
                          text=True, timeout=600, check=False)


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_readme_first_command_runs_the_terminal_chat_from_a_fresh_copy(tmp_path: Path) -> None:
    command = quickstart_command((ROOT / "README.md").read_text(encoding="utf-8"))
    assert command.endswith("chatops run"), command
    # A path with a space in it, as a home directory or a synced folder often has.
    clone = fresh_copy(tmp_path / "a fresh clone" / "chatops")
    (tmp_path / "home").mkdir()

    result = run_as_newcomer(command, clone, "/diagnose list\n/quit\n")

    output = ANSI.sub("", result.stdout + result.stderr)
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    assert "Services I can diagnose" in output
    assert re.search(r"\d+ checks \(", output), output[-4000:]  # one line a service: its checks, named
