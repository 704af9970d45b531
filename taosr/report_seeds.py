"""The seed table: the same pipeline run once per seed (sibling run folders), each stage's
macro-F1 and QWK per seed with their mean and standard deviation, and each seed's paired
intervals against the lexical baseline and against SFT on the same rows. One seed is one draw;
this is the table a recipe's claim rests on.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Mapping

from taosr.differences import difference_header, difference_row
from taosr.report import stage_metrics, stage_predictions, stage_rows


def seed_table(runs: Mapping[int, str | Path]) -> str:
    """Markdown for ``{seed: run folder}``: the stages every run evaluated, in report order."""
    folders = {seed: Path(folder) for seed, folder in sorted(runs.items())}
    metrics = {
        seed: {slug: found.get("overall", {}) for slug, found in stage_metrics(folder).items()}
        for seed, folder in folders.items()
    }
    shared = [slug for slug in next(iter(metrics.values())) if all(slug in m for m in metrics.values())]
    if not shared:
        raise ValueError(f"no stage was evaluated in every run: {', '.join(map(str, folders.values()))}")
    names = stage_rows(next(iter(folders.values())))
    seeds = list(folders)
    lines = [
        f"Seeds {', '.join(map(str, seeds))}; n = "
        + ", ".join(str(metrics[s][shared[0]].get("n", "?")) for s in seeds)
        + " evaluated rows.",
        "",
    ]
    for key, label, scale, digits in (("macro_f1", "macro-F1", 100, 1), ("qwk", "QWK", 1, 3)):
        header = ["model", *(f"{label} seed {s}" for s in seeds), "mean ± sd"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for slug in shared:
            values = [metrics[s][slug].get(key) for s in seeds]
            cells = [f"{scale * v:.{digits}f}" if v is not None else "–" for v in values]
            known = [scale * v for v in values if v is not None]
            spread = (
                f"{statistics.mean(known):.{digits}f} ± {statistics.stdev(known):.{digits}f}"
                if len(known) > 1
                else (f"{known[0]:.{digits}f} (one seed)" if known else "–")
            )
            lines.append(f"| {names.get(slug, slug)} | " + " | ".join(cells) + f" | {spread} |")
        lines.append("")
    lines += ["Each seed against the lexical baseline and against SFT (paired bootstrap on the same rows):", ""]
    lines += difference_header("seed")
    for seed, folder in folders.items():
        predictions = {slug: stage_predictions(folder, slug) for slug in shared}
        for before in ("lexical", "sft"):
            for after in shared:
                if before not in predictions or after in ("lexical", before, "base"):
                    continue
                lines.append(
                    difference_row(
                        f"{names.get(before, before)} → {names.get(after, after)}",
                        predictions[before],
                        predictions[after],
                        seed,
                    )
                    + f" {seed} |"
                )
    return "\n".join(lines) + "\n"
