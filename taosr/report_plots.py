"""The run report's PNG plots: training curves, confusion matrices and pass@k (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

from taosr.labels import LEVELS

# Curves drawn per training stage, when the stage logged them.
CURVES = {
    "sft": ("loss", "decision_nll", "val_macro_f1", "val_qwk"),
    "genrm": ("loss",),
    "dpo": ("loss", "reward_margin", "reward_accuracy"),
    "grpo": ("reward_mean", "accuracy", "kl", "entropy", "dropped_fraction"),
    "srpo": ("reward_mean", "accuracy", "kl", "entropy", "dropped_fraction"),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    _pyplot().close(figure)
    return path


def plot_curves(logs: dict[str, list[dict]], folder: Path) -> list[Path]:
    plt = _pyplot()
    written = []
    for stage, rows in logs.items():
        keys = [k for k in CURVES[stage.split("/")[0]] if any(isinstance(r.get(k), (int, float)) for r in rows)]
        if not keys:
            continue
        figure, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3), squeeze=False)
        for axis, key in zip(axes[0], keys):
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 40 else None)
            axis.set_title(key)
            axis.set_xlabel("step")
        figure.suptitle(f"{stage} training")
        written.append(_save(figure, folder / f"curves-{stage.replace('/', '-')}.png"))
    return written


def plot_confusions(metrics: dict[str, dict], names: dict[str, str], folder: Path) -> Path | None:
    """Gold level (rows) against predicted level (columns; 0 = unparseable) per stage, titled by ``names``."""
    import numpy as np

    plt = _pyplot()
    with_confusion = {slug: m["confusion"] for slug, m in metrics.items() if m.get("confusion")}
    if not with_confusion:
        return None
    figure, axes = plt.subplots(1, len(with_confusion), figsize=(3.4 * len(with_confusion), 3.4), squeeze=False)
    predicted = sorted({int(p) for c in with_confusion.values() for row in c.values() for p in row}, reverse=True)
    for axis, (slug, confusion) in zip(axes[0], with_confusion.items()):
        grid = np.array([[confusion.get(str(g), {}).get(str(p), 0) for p in predicted] for g in LEVELS])
        axis.imshow(grid, cmap="Blues")
        for (i, j), count in np.ndenumerate(grid):
            axis.text(j, i, str(count), ha="center", va="center", fontsize=8)
        axis.set_xticks(range(len(predicted)), [str(p) for p in predicted])
        axis.set_yticks(range(len(LEVELS)), [str(g) for g in LEVELS])
        axis.set_xlabel("predicted")
        axis.set_ylabel("gold")
        axis.set_title(names[slug])
    return _save(figure, folder / "confusion.png")


def plot_pass_at_k(pass_at_k: dict, folder: Path) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for name, row in {"all": pass_at_k["overall"], **pass_at_k.get("by_query_type", {})}.items():
        ks = sorted(int(k.split("@")[1]) for k in row if k.startswith("pass@"))
        axis.plot(ks, [row[f"pass@{k}"] for k in ks], marker="o", linewidth=2.5 if name == "all" else 1, label=name)
    axis.set_xlabel("k")
    axis.set_ylabel("pass@k")
    axis.set_title("pass@k of the SFT model (stage 2 sampling)")
    axis.legend(fontsize=7)
    return _save(figure, folder / "pass_at_k.png")
