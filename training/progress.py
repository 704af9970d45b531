"""A training stage's progress bar on the driver (tqdm): step of total, loss, the last validation
macro-F1 (or the RL reward) and an ETA, read from the metrics.jsonl rank 0 writes, so there is
one bar per stage however many workers train, and a worker's log line is not the display. A
run on S3 has no local log to follow and shows no bar (its metrics reach S3 at checkpoints)."""

from __future__ import annotations

import json
import os
import sys
import threading


def bars_wanted(enabled: bool) -> bool:
    """Bars are on unless the config or TAOSR_PROGRESS_BARS=0 turns them off (the test suite does)."""
    return enabled and os.environ.get("TAOSR_PROGRESS_BARS", "1") != "0"


def postfix(metrics: dict, last: dict) -> dict:
    """The figures the bar shows after the step count: loss, then the RL reward and the latest
    validation macro-F1 when the stage logs them (``last`` keeps the latest seen of each)."""
    for key in ("loss", "reward_mean", "val_macro_f1"):
        if isinstance(metrics.get(key), (int, float)):
            last[key] = metrics[key]
    shown = {"loss": last.get("loss"), "reward": last.get("reward_mean"), "val_f1": last.get("val_macro_f1")}
    return {key: f"{value:.3f}" for key, value in shown.items() if value is not None}


class StageProgress:
    """Follows ``folder``/metrics.jsonl in a thread while ``fit`` waits for Ray Train."""

    def __init__(
        self, folder: str | None, label: str, total_steps: int | None, enabled: bool = True, poll_s: float = 2.0
    ):
        self.path = os.path.join(folder, "metrics.jsonl") if folder else ""
        self.label, self.total, self.poll_s = label, total_steps or None, poll_s
        self.enabled = bool(self.path) and bars_wanted(enabled)
        self._stop, self._offset = threading.Event(), 0
        self._thread: threading.Thread | None = None
        self._last: dict = {}

    def __enter__(self) -> "StageProgress":
        if self.enabled:
            if os.path.exists(self.path):  # a resumed stage: count on from what is logged
                self._offset = os.path.getsize(self.path)
            thread = self._thread = threading.Thread(target=self._follow, name=f"progress-{self.label}", daemon=True)
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _follow(self) -> None:
        from tqdm import tqdm

        interactive = sys.stderr.isatty()
        with tqdm(
            total=self.total,
            desc=self.label,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
            mininterval=0.5 if interactive else 30.0,
        ) as bar:
            while True:
                stopping = self._stop.wait(self.poll_s)
                for metrics in self._new_lines():
                    step = metrics.get("step")
                    if isinstance(metrics.get("total_steps"), int) and bar.total != metrics["total_steps"]:
                        bar.total = metrics["total_steps"]
                    if isinstance(step, int) and step > bar.n:
                        bar.update(step - bar.n)
                    bar.set_postfix(postfix(metrics, self._last), refresh=False)
                if stopping:
                    return

    def _new_lines(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as handle:
            handle.seek(self._offset)
            text = handle.read()
        complete = text[: text.rfind("\n") + 1]  # a line still being written waits for the next poll
        self._offset += len(complete.encode())
        lines = []
        for line in complete.splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # not a metrics line: nothing to show
        return lines
