"""Choosing CumPT's beta on a validation set: sweep, pick, plot (docs/method.md section 7)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from taosr.cumpt import best_beta, sweep_beta
from taosr.labels import LEVELS


def read_predictions(path: str) -> tuple[np.ndarray, list[int]]:
    """[N, 4] level probabilities (LEVELS order) and gold levels from an eval predictions.jsonl."""
    return parse_predictions(Path(path).read_text(), path)


def parse_predictions(text: str, source: str = "predictions") -> tuple[np.ndarray, list[int]]:
    """``read_predictions`` of a predictions.jsonl already read (local or from s3)."""
    probs, gold = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        try:
            probs.append([float(row[f"p_{level}"]) for level in LEVELS])
            gold.append(int(row["label"]))
        except KeyError as error:
            raise ValueError(f"{source}:{number}: needs p_4..p_1 and label (first-token eval output)") from error
    if not probs:
        raise ValueError(f"{source} holds no predictions")
    return np.asarray(probs), gold


def sweep_and_plot(predictions: str, out_dir: str, metric: str = "macro_f1", step: float = 0.05) -> dict:
    probs, gold = read_predictions(predictions)
    betas = np.round(np.arange(step, 1.0 + 1e-9, step), 4).tolist()
    rows = sweep_beta(probs, gold, betas)
    chosen = best_beta(rows, metric)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cumpt_sweep.json").write_text(json.dumps({"metric": metric, "best_beta": chosen, "sweep": rows}, indent=2))
    plot_sweep(rows, chosen, out / "cumpt_sweep.png")
    best = next(row for row in rows if row["beta"] == chosen)
    return {
        "best_beta": chosen,
        metric: best[metric],
        "tier_accuracy": best["tier_accuracy"],
        "n": len(gold),
        "plot": str(out / "cumpt_sweep.png"),
    }


def plot_sweep(rows: list[dict], chosen: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    betas = [row["beta"] for row in rows]
    figure, axis = plt.subplots(figsize=(6, 4))
    for key, label in (
        ("macro_f1", "macro-F1"),
        ("accuracy", "accuracy"),
        ("good_f1", "Good-F1"),
        ("tier_accuracy", "tier accuracy"),
    ):
        axis.plot(betas, [row[key] for row in rows], label=label)
    axis.axvline(chosen, color="grey", linestyle="--", label=f"chosen beta {chosen:g}")
    axis.set_xlabel("beta")
    axis.set_ylabel("score")
    axis.set_title("CumPT: tier and level metrics against beta")
    axis.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
