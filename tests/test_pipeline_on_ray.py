"""The pipeline as one resumable job, on the tiny model: killed with SIGKILL during SFT and
rerun, it skips the finished stages, resumes SFT from its last checkpoint (taken exactly at an
epoch boundary, the easiest place to get the data position wrong) with no step repeated or
skipped, and ends with the same metrics as an uninterrupted run of the same seed."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

OVERRIDES = [
    "data.rows=160",
    "model.name=tiny",
    "sft.num_workers=1",
    "sft.cpus_per_worker=1",
    "sft.micro_batch_size=4",
    "sft.lr=3e-3",
    "sft.epochs=4",
    "sft.bf16=false",
    "sft.log_every_steps=1",
    "sft.max_seq_len=384",
    "sft.train_layers=0",
    "eval.engine=hf",
    "eval.batch_size=32",
    "eval.untrained=true",
]
STAGES = "data,cot,sft,eval"


def pipeline(run_dir, address, model_cache, *extra):
    command = [
        sys.executable,
        "-m",
        "taosr.ray_jobs.pipeline",
        "--config",
        "configs/tiny.yaml",
        "--stages",
        STAGES,
        f"run_dir={run_dir}",
        f"ray.address={address}",
        f"model.cache_dir={model_cache}",
        *OVERRIDES,
        *extra,
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )


# The test's own limit, and the budgets of its steps, which add up to less than it (four
# pipeline runs, the wait for a checkpoint, the wait for CPUs): a step that overruns fails with
# its own message, not pytest-timeout's.
TEST_TIMEOUT_S = 1800
RUN_BUDGET_S, CHECKPOINT_WAIT_S, CPU_WAIT_S = 330, 300, 120
assert 4 * RUN_BUDGET_S + CHECKPOINT_WAIT_S + CPU_WAIT_S < TEST_TIMEOUT_S


def finish(process, timeout=RUN_BUDGET_S) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_sigkill_during_sft_then_rerun_matches_uninterrupted(ray_cluster, tiny_model, tmp_path):
    from tests.conftest import MODEL_CACHE, kill_once_resumable, wait_for_free_cpus

    address = ray_cluster.get_runtime_context().gcs_address
    straight = tmp_path / "straight"
    finish(pipeline(straight, address, MODEL_CACHE))
    logged = [json.loads(line) for line in (straight / "sft" / "metrics.jsonl").read_text().splitlines()]
    steps_per_epoch = max(row["step"] for row in logged if row["epoch"] == 0)
    assert steps_per_epoch < logged[-1]["step"]

    killed = tmp_path / "killed"
    every = f"sft.checkpoint_every_steps={steps_per_epoch}"  # resumable checkpoints only at epoch ends
    kill_once_resumable(pipeline(killed, address, MODEL_CACHE, every), killed / "sft", CHECKPOINT_WAIT_S)
    assert not (killed / "sft" / "manifest.json").exists()
    before = {stage: json.loads((killed / stage / "manifest.json").read_text()) for stage in ("data", "cot")}
    wait_for_free_cpus(ray_cluster, 3, CPU_WAIT_S)

    output = finish(pipeline(killed, address, MODEL_CACHE, every))
    shown = "\n".join(line for line in output.splitlines() if line.startswith("[") or "resumed" in line)
    assert "[data] skip" in output and "[cot] skip" in output, shown
    assert "[sft] resume" in output, shown
    resumed_after = json.loads((killed / "sft" / "summary.json").read_text())["resumed_after_step"]
    assert resumed_after > 0 and resumed_after % steps_per_epoch == 0 and resumed_after < logged[-1]["step"]
    assert json.loads((straight / "sft" / "summary.json").read_text())["resumed_after_step"] == 0
    for stage, manifest in before.items():  # not re-run: their manifests are untouched
        assert json.loads((killed / stage / "manifest.json").read_text()) == manifest

    steps = [json.loads(line)["step"] for line in (killed / "sft" / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line)["step"] for line in (straight / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert steps == expected  # each step logged once: none repeated, none skipped
    resumed_loss = [json.loads(line)["loss"] for line in (killed / "sft" / "metrics.jsonl").read_text().splitlines()]
    straight_loss = [json.loads(line)["loss"] for line in (straight / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert resumed_loss == pytest.approx(straight_loss, abs=1e-3)
    for slug in ("base", "sft"):
        a = json.loads((straight / "eval" / slug / "metrics.json").read_text())["overall"]
        b = json.loads((killed / "eval" / slug / "metrics.json").read_text())["overall"]
        assert b["macro_f1"] == pytest.approx(a["macro_f1"], abs=0.02) and b["n"] == a["n"]

    # A third run has nothing to do.
    output = finish(pipeline(killed, address, MODEL_CACHE, every))
    assert all(f"[{stage}] skip" in output for stage in STAGES.split(","))


def test_seeds_run_the_pipeline_once_per_seed_and_write_the_seed_table(ray_cluster, tiny_model, tmp_path):
    """`--seeds 0,1` runs each seed into its own folder and writes seeds.md; the lexical line is
    fitted in each run and reads the same in both (the data seed stays, so the rows do)."""
    from tests.conftest import MODEL_CACHE

    address = ray_cluster.get_runtime_context().gcs_address
    command = [
        sys.executable,
        "-m",
        "taosr.ray_jobs.pipeline",
        "--config",
        "configs/tiny.yaml",
        "--stages",
        "data,eval",
        "--seeds",
        "0,1",
        f"run_dir={tmp_path}",
        f"ray.address={address}",
        f"model.cache_dir={MODEL_CACHE}",
        "data.rows=160",
        "model.name=tiny",
        "eval.engine=hf",
    ]
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_BUDGET_S, cwd=os.path.dirname(os.path.dirname(__file__))
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert (tmp_path / "seed-0" / "eval" / "lexical" / "metrics.json").exists()
    assert (tmp_path / "seed-1" / "eval" / "lexical" / "metrics.json").exists()
    table = (tmp_path / "seeds.md").read_text()
    lexical = next(line for line in table.splitlines() if line.startswith("| lexical") and "±" in line)
    cells = [cell.strip() for cell in lexical.strip("|").split("|")]
    assert cells[1] == cells[2] and cells[3].endswith("± 0.0"), lexical
