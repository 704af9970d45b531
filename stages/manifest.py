"""Stage manifests: what lets the pipeline skip a finished stage, rerun a changed one, and resume
an interrupted one.

A stage that finishes writes ``<run_dir>/<stage>/manifest.json`` last: the hash of the config
sections it reads, the output hashes of the stages it read from, a content hash of what it
wrote, its metrics and timings. Before running a stage the pipeline compares what it would run
now (config hash and current input hashes) with that manifest:

- equal: the stage is up to date and is skipped;
- different, but ``started.json`` (written when the stage began) matches: the stage was
  interrupted; it runs again in place, and its trainer resumes from the latest checkpoint;
- otherwise: its folder is cleared (so no stale checkpoint is resumed) and it runs afresh.

Inputs are keyed by content, so a changed stage makes everything downstream that read it run
again, and an upstream rerun that reproduced the same bytes does not.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from taosr.datasets.storage import exists, join, read_text, write_json
from taosr.stages.registry import StageSpec

MANIFEST = "manifest.json"
STARTED = "started.json"
# Config sections every stage depends on; each stage adds its own.
SHARED_SECTIONS = ("seed", "model", "data")
# What a fingerprint leaves out: Ray Train's checkpoint store, and the bookkeeping files themselves.
NOT_OUTPUTS = ("ray_train", MANIFEST, STARTED)


@dataclass(frozen=True)
class Decision:
    action: str  # "skip" | "resume" | "fresh"
    reason: str
    expected: dict  # {"config_hash", "inputs"} this run would record


def config_hash(config_dict: dict, sections: tuple[str, ...]) -> str:
    chosen = {key: config_dict.get(key) for key in (*SHARED_SECTIONS, *sections)}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_json_or_none(path: str, s3_endpoint: str = "") -> dict | None:
    if not exists(path, s3_endpoint):
        return None
    try:
        return json.loads(read_text(path, s3_endpoint))
    except json.JSONDecodeError:
        return None  # a torn write from a killed run: treated as absent


def read_manifest(run_dir: str, stage: str, s3_endpoint: str = "") -> dict | None:
    return read_json_or_none(join(run_dir, stage, MANIFEST), s3_endpoint)


def input_hashes(run_dir: str, spec: StageSpec, s3_endpoint: str = "") -> dict:
    hashes = {}
    for name in spec.inputs:
        manifest = read_manifest(run_dir, name, s3_endpoint)
        if manifest is not None:
            hashes[name] = manifest["output_hash"]
    return hashes


def logs_hash(source: str, s3_endpoint: str = "") -> str:
    """The log files under ``source`` by path, size and modification time: new logs written to
    the same path, or a file replaced in place, change it (no bytes are read)."""
    from taosr.datasets.storage import listing_hash

    return listing_hash(source, s3_endpoint, missing="data.source not found:")


def decide(run_dir: str, spec: StageSpec, config_dict: dict, s3_endpoint: str = "", force: bool = False) -> Decision:
    inputs = input_hashes(run_dir, spec, s3_endpoint)
    source = (config_dict.get("data") or {}).get("source", "generate")
    if spec.reads_logs and source != "generate":
        inputs["logs"] = logs_hash(source, s3_endpoint)
    expected = {"config_hash": config_hash(config_dict, spec.sections), "inputs": inputs}
    folder = join(run_dir, spec.name)
    manifest = read_json_or_none(join(folder, MANIFEST), s3_endpoint)
    started = read_json_or_none(join(folder, STARTED), s3_endpoint)
    if manifest is not None and not force and not spec.always_run:
        if _same(manifest, expected):
            return Decision("skip", "manifest matches", expected)
        return Decision("fresh", _difference(manifest, expected), expected)
    if started is not None and not force and _same(started, expected):
        return Decision("resume", "interrupted run with the same config and inputs", expected)
    if force:
        return Decision("fresh", "forced", expected)
    return Decision("fresh", "no manifest" if started is None else _difference(started, expected), expected)


def _same(recorded: dict, expected: dict) -> bool:
    return recorded.get("config_hash") == expected["config_hash"] and recorded.get("inputs") == expected["inputs"]


def _difference(recorded: dict, expected: dict) -> str:
    if recorded.get("config_hash") != expected["config_hash"]:
        return "config changed"
    changed = sorted(
        set(recorded.get("inputs", {})) ^ set(expected["inputs"])
        | {k for k in expected["inputs"] if recorded.get("inputs", {}).get(k) != expected["inputs"][k]}
    )
    return f"inputs changed: {', '.join(changed)}"


def fingerprint(folder: str, s3_endpoint: str = "") -> str:
    """A content hash of every file under ``folder`` (paths and bytes), bookkeeping excluded."""
    from pyarrow import fs

    from taosr.datasets.storage import filesystem_and_path

    filesystem, root = filesystem_and_path(folder, s3_endpoint)
    digest = hashlib.sha256()
    selector = fs.FileSelector(root, recursive=True, allow_not_found=True)
    entries = []
    for info in filesystem.get_file_info(selector):
        relative = info.path[len(root) :].lstrip("/")
        if info.type != fs.FileType.File or relative.split("/", 1)[0] in NOT_OUTPUTS:
            continue
        # Ray Data names Parquet parts with a random write id: only their folder and bytes count.
        name = relative.rsplit("/", 1)[0] + "/*.parquet" if relative.endswith(".parquet") else relative
        file_digest = hashlib.sha256()
        with filesystem.open_input_stream(info.path) as stream:
            while chunk := stream.read(1 << 22):
                file_digest.update(chunk)
        entries.append(f"{name}\0{file_digest.hexdigest()}")
    for entry in sorted(entries):
        digest.update(entry.encode() + b"\n")
    return digest.hexdigest()[:16]


def mark_started(run_dir: str, stage: str, decision: Decision, s3_endpoint: str = "") -> None:
    write_json(join(run_dir, stage, STARTED), {**decision.expected, "started_at": time.time()}, s3_endpoint)


def write_manifest(
    run_dir: str,
    stage: str,
    decision: Decision,
    config_dict: dict,
    spec: StageSpec,
    metrics,
    seconds: float,
    s3_endpoint: str = "",
) -> dict:
    folder = join(run_dir, stage)
    manifest = {
        "stage": stage,
        **decision.expected,
        "config": {key: config_dict.get(key) for key in spec.sections},
        "output_hash": fingerprint(folder, s3_endpoint),
        "metrics": metrics,
        "seconds": round(seconds, 1),
        "finished_at": time.time(),
    }
    write_json(join(folder, MANIFEST), manifest, s3_endpoint)
    return manifest
