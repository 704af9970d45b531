"""The pipeline's manifests: skip what is up to date, rerun what changed and what read it,
resume what was interrupted. Plain files, no Ray."""

import json

import pytest

from taosr.stages import manifest as m
from taosr.stages.registry import StageSpec

UP = StageSpec("up", ("up",), ())
DOWN = StageSpec("down", ("down",), ("up",))
CONFIG = {"seed": 0, "model": {"name": "tiny"}, "data": {"rows": 10}, "up": {"lr": 1}, "down": {"beta": 0.1}}


def finish(run, spec, config, files):
    """What the pipeline does around a stage: decide, mark started, write outputs, manifest."""
    decision = m.decide(str(run), spec, config)
    m.mark_started(str(run), spec.name, decision)
    for name, text in files.items():
        path = run / spec.name / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return m.write_manifest(str(run), spec.name, decision, config, spec, {"ok": 1}, 1.0)


def test_finished_stage_is_skipped_and_config_change_reruns_it(tmp_path):
    finish(tmp_path, UP, CONFIG, {"model.bin": "weights"})
    assert m.decide(str(tmp_path), UP, CONFIG).action == "skip"
    changed = {**CONFIG, "up": {"lr": 2}}
    decision = m.decide(str(tmp_path), UP, changed)
    assert (decision.action, decision.reason) == ("fresh", "config changed")
    # A section the stage does not read changes nothing for it.
    assert m.decide(str(tmp_path), UP, {**CONFIG, "down": {"beta": 9}}).action == "skip"
    # Sections every stage reads do.
    assert m.decide(str(tmp_path), UP, {**CONFIG, "seed": 1}).action == "fresh"


def test_downstream_reruns_only_when_upstream_output_changed(tmp_path):
    finish(tmp_path, UP, CONFIG, {"model.bin": "weights"})
    finish(tmp_path, DOWN, CONFIG, {"table.md": "t"})
    assert m.decide(str(tmp_path), DOWN, CONFIG).action == "skip"
    finish(tmp_path, UP, {**CONFIG, "up": {"lr": 2}}, {"model.bin": "weights"})  # same bytes again
    assert m.decide(str(tmp_path), DOWN, CONFIG).action == "skip"
    finish(tmp_path, UP, {**CONFIG, "up": {"lr": 3}}, {"model.bin": "other weights"})
    decision = m.decide(str(tmp_path), DOWN, CONFIG)
    assert (decision.action, decision.reason) == ("fresh", "inputs changed: up")


def test_interrupted_stage_resumes_unless_its_config_changed(tmp_path):
    finish(tmp_path, UP, CONFIG, {"model.bin": "weights"})
    decision = m.decide(str(tmp_path), DOWN, CONFIG)
    m.mark_started(str(tmp_path), "down", decision)  # then killed: no manifest
    assert m.decide(str(tmp_path), DOWN, CONFIG).action == "resume"
    assert m.decide(str(tmp_path), DOWN, {**CONFIG, "down": {"beta": 0.2}}).action == "fresh"
    assert m.decide(str(tmp_path), DOWN, CONFIG, force=True).action == "fresh"


def test_fingerprint_covers_paths_and_bytes_but_not_checkpoints(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("1")
    before = m.fingerprint(str(tmp_path))
    (tmp_path / "ray_train").mkdir()
    (tmp_path / "ray_train" / "ckpt").write_text("big")
    (tmp_path / m.MANIFEST).write_text("{}")
    assert m.fingerprint(str(tmp_path)) == before
    (tmp_path / "a" / "x.txt").write_text("2")
    assert m.fingerprint(str(tmp_path)) != before
    (tmp_path / "a" / "x.txt").write_text("1")
    (tmp_path / "a" / "x.txt").rename(tmp_path / "a" / "y.txt")
    assert m.fingerprint(str(tmp_path)) != before


def test_fingerprint_ignores_the_random_names_of_parquet_parts(tmp_path):
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "5f1e_000000.parquet").write_bytes(b"part")
    before = m.fingerprint(str(tmp_path))
    (tmp_path / "rows" / "5f1e_000000.parquet").rename(tmp_path / "rows" / "9ab2_000000.parquet")
    assert m.fingerprint(str(tmp_path)) == before
    (tmp_path / "rows" / "9ab2_000000.parquet").write_bytes(b"other")
    assert m.fingerprint(str(tmp_path)) != before


def test_torn_manifest_counts_as_absent(tmp_path):
    finish(tmp_path, UP, CONFIG, {"model.bin": "weights"})
    (tmp_path / "up" / m.MANIFEST).write_text('{"stage": "up", "conf')
    assert m.decide(str(tmp_path), UP, CONFIG).action == "resume"  # started.json still matches


def test_manifest_records_hashes_metrics_and_time(tmp_path):
    manifest = finish(tmp_path, DOWN, CONFIG, {"table.md": "t"})
    on_disk = json.loads((tmp_path / "down" / m.MANIFEST).read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert set(on_disk) >= {"config_hash", "inputs", "output_hash", "metrics", "seconds", "config"}
    assert on_disk["config"] == {"down": {"beta": 0.1}} and on_disk["inputs"] == {}


def test_stage_selection_rejects_unknown_names():
    from taosr.ray_jobs.pipeline import selected_stages
    from taosr.stages.registry import stage_names

    STAGES = stage_names()

    assert selected_stages("eval,data", "") == ["data", "eval"]  # pipeline order, whatever the order given
    assert selected_stages(",".join(STAGES), "grpo,srpo,serve") == [
        s for s in STAGES if s not in ("grpo", "srpo", "serve")
    ]
    with pytest.raises(ValueError, match="unknown stages"):
        selected_stages("data,tarin", "")


def test_new_logs_at_the_same_path_rerun_the_stage_that_reads_them(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "day1.jsonl").write_text('{"id": 1}\n')
    reader = StageSpec("reader", (), (), reads_logs=True)
    config = {**CONFIG, "data": {"source": str(logs)}}
    run = tmp_path / "run"
    finish(run, reader, config, {"accepted.parquet": "rows"})
    assert m.decide(str(run), reader, config).action == "skip"
    (logs / "day2.jsonl").write_text('{"id": 2}\n')
    decision = m.decide(str(run), reader, config)
    assert (decision.action, decision.reason) == ("fresh", "inputs changed: logs")
    finish(run, reader, config, {"accepted.parquet": "more rows"})
    (logs / "day1.jsonl").write_text('{"id": 1}\n{"id": 3}\n')  # a file replaced in place
    assert m.decide(str(run), reader, config).action == "fresh"
    with pytest.raises(FileNotFoundError, match="data.source not found"):
        m.decide(str(run), reader, {**CONFIG, "data": {"source": str(tmp_path / "missing")}})
