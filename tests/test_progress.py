"""The driver's progress bar over a stage's metrics.jsonl (pure file following, no Ray)."""

import json
import time

from taosr.training.progress import StageProgress, postfix


def test_the_postfix_keeps_the_latest_loss_reward_and_validation():
    last = {}
    assert postfix({"step": 1, "loss": 0.52341}, last) == {"loss": "0.523"}
    assert postfix({"step": 2, "loss": 0.5, "val_macro_f1": 0.61}, last) == {"loss": "0.500", "val_f1": "0.610"}
    assert postfix({"step": 3, "reward_mean": 0.25}, last) == {"loss": "0.500", "reward": "0.250", "val_f1": "0.610"}


def test_the_bar_follows_the_log_and_reads_only_whole_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("TAOSR_PROGRESS_BARS", "1")
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps({"step": 5, "total_steps": 40, "loss": 1.0}) + "\n")  # an earlier attempt's
    progress = StageProgress(str(tmp_path), "sft", None, poll_s=0.05)
    with progress:
        with open(log, "a") as handle:
            handle.write(json.dumps({"step": 10, "total_steps": 40, "loss": 0.5}) + "\n")
            handle.write('{"step": 11, "los')  # half written
            handle.flush()
            time.sleep(0.3)
            assert progress._last == {"loss": 0.5}
            handle.write('s": 0.4}\n')
        time.sleep(0.3)
    assert progress._last == {"loss": 0.4}


def test_no_bar_without_a_local_log_or_when_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("TAOSR_PROGRESS_BARS", "1")
    assert not StageProgress(None, "grpo", 20).enabled  # an s3:// run has no local log
    assert not StageProgress(str(tmp_path), "grpo", 20, enabled=False).enabled
    monkeypatch.setenv("TAOSR_PROGRESS_BARS", "0")
    assert not StageProgress(str(tmp_path), "grpo", 20).enabled
