"""The README is a guide: short, in the order a new user needs it, and everything it names
exists (files, config options, `taosr` commands, entrypoint modules, pipeline flags)."""

import importlib.util
import re
from pathlib import Path

import pytest

from taosr.config import describe
from taosr.ray_jobs.cli import build_parser
from taosr.ray_jobs.pipeline import build_parser as pipeline_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SECTIONS = [
    "The two commands",
    "Your own logs",
    "Your cluster",
    "Serving",
    "Batch prediction",
    "Configuration",
    "Results",
    "Layout",
    "Data and licenses",
]
# Paths the README names that a run creates or a user supplies, not files of the repository.
MADE_BY_A_RUN = (
    "runs/",
    "preds/",
    "checked/",
    "/tmp/",
    "logs.csv",
    "serve.yaml",
    "report.md",
    "report.html",
    "accepted/",
    "quarantine/",
    "predictions.jsonl",
    "metrics.json",
    ".venv",
    "application/json",
    "YOUR-REGISTRY/",  # the user's image registry
    "taosr/api-keys",  # the Secrets Manager secret deploy/iam/README.md creates
)
CONFIG_KEYS = {key for key, _, _ in describe()}
TOP_SECTIONS = {key.split(".")[0] for key in CONFIG_KEYS}


def code_spans() -> list[str]:
    """Inline code and every line of the fenced blocks."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", README, flags=re.S))
    return inline + [line for block in fenced for line in block.splitlines()]


def words() -> list[str]:
    return [word.strip(",;()'\"\\") for span in code_spans() for word in span.split()]


def test_the_readme_is_a_short_guide_in_the_agreed_order():
    assert len(README) <= 15_500, f"README.md is {len(README)} characters; results belong in docs/"
    headings = re.findall(r"^## (.+)$", README, flags=re.M)
    assert headings == SECTIONS


def test_every_file_it_names_exists():
    named = {
        word
        for word in words()
        if re.search(r"/|\.(py|ya?ml|md|sh|png|json|toml)$", word)
        and not word.startswith(("http", "s3://", "-", "127.0.0.1", "$"))
        and "=" not in word
    }
    named |= set(re.findall(r"\]\(([^)]+)\)", README))  # markdown links and the picture
    missing = []
    for path in sorted(named):
        if any(part in path for part in MADE_BY_A_RUN) or path.startswith("taosr.") or path.count("*"):
            continue
        if path.startswith("/"):
            continue  # an HTTP route of the endpoint
        where = (
            ROOT / path
            if "/" in path
            else next((d / path for d in (ROOT, ROOT / "configs") if (d / path).exists()), ROOT / path)
        )
        if path.startswith("../shared/") and not (ROOT.parent / "shared").exists():
            continue  # a checkout without the shared data beside it
        if not where.exists():
            missing.append(path)
    assert not missing, f"README names files that do not exist: {missing}"


def test_every_config_option_it_names_exists():
    options = {
        re.sub(r"=.*", "", word)
        for word in words()
        if re.fullmatch(r"[a-z_]+\.[a-z_.]+(=.*)?", word)
        and word.split(".")[0] in TOP_SECTIONS
        and not re.search(r"\.(ya?ml|md|json|py|sh)$", word)  # serve.yaml is a file, not serve's option
    }
    unknown = [
        option
        for option in sorted(options)
        if option not in CONFIG_KEYS and not any(option.startswith(f"{key}.") for key in CONFIG_KEYS)
    ]
    assert options and not unknown, f"README names config options that do not exist: {unknown}"


def test_every_taosr_command_and_entrypoint_it_names_exists():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    lines = code_spans()
    used = [re.search(r"taosr (\w+)(?: (\w+))?", line) for line in lines if re.search(r"(^|/| )taosr \w", line)]
    assert used
    for match in filter(None, used):
        command, action = match.groups()
        assert command in commands, f"`taosr {command}` is not a command"
        sub = commands[command]._subparsers
        if sub is not None and action:
            assert action in sub._group_actions[0].choices, f"`taosr {command} {action}` is not a command"
    modules = set(re.findall(r"python -m (taosr\.[\w.]+)", README))
    assert modules and all(importlib.util.find_spec(module) for module in modules), modules


@pytest.mark.parametrize("flag", sorted(set(re.findall(r"(--(?:stages|skip|force|config)) ", README))))
def test_every_pipeline_flag_it_names_exists(flag):
    assert flag in pipeline_parser()._option_string_actions
