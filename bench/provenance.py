"""What a benchmark's result file records about where it ran: the commit it measured."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """The checkout's short commit hash ("unknown" outside a git checkout)."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def write_result(result: dict, out: str | Path) -> None:
    """Print a benchmark's result and save it as indented JSON at ``out``."""
    print(json.dumps(result, indent=1))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1) + "\n")


def child_result(command: list[str], what: str, timeout_s: float) -> dict:
    """Run one side of a benchmark in a child process (its memory and its engine its own) and
    return the JSON it printed on its last ``RESULT `` line; stop with its stderr if it failed."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not found:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(found[-1].removeprefix("RESULT "))


def save_benchmark(name: str, args_out: str, **fields) -> dict:
    """The result file's common head (benchmark, commit, command line) and ``fields``; written
    to ``args_out`` when one is given."""
    import sys

    result = {"benchmark": name, "commit": git_commit(), "command": " ".join(sys.argv), **fields}
    if args_out:
        write_result(result, args_out)
    return result
