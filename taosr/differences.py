"""Two models' predictions on the same held-out rows -> one row of a stage-differences table:
paired-bootstrap intervals for macro-F1, accuracy and QWK, the rows that changed, and the exact
sign test of those rows. The run report and the format ablation both print these rows."""

from __future__ import annotations

from taosr.metrics import paired_bootstrap, sign_test

BOOTSTRAP_RESAMPLES = 2000  # of the held-out examples, for the stage-difference intervals


def difference_header(*extra: str) -> list[str]:
    """The header and rule lines of a table of ``difference_row`` rows, with ``extra`` columns."""
    columns = [
        "change",
        "n",
        "Δ macro-F1 [95% interval]",
        "Δ acc [95% interval]",
        "Δ QWK [95% interval]",
        "rows changed (→ right / → wrong)",
        "sign test p",
        "beyond noise?",
        *extra,
    ]
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def difference_row(
    label: str, before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], seed: int = 0
) -> str:
    """``| label | n | Δ macro-F1 [interval] | Δ acc [interval] | Δ QWK [interval] | rows changed |
    sign test p | beyond noise? |`` for two models' {id: (gold, pred)} on the ids both scored (a
    paired bootstrap). The changed rows say what the intervals rest on: when a stage changes a
    handful of predictions, the bootstrap resamples only those, and a lopsided handful gives an
    interval that just excludes 0. The sign test is the exact one for that case (McNemar's, for
    accuracy): five rows all to right give p = 0.0625."""
    shared = sorted(before.keys() & after.keys())
    result = paired_bootstrap(
        [before[i][0] for i in shared],
        [before[i][1] for i in shared],
        [after[i][1] for i in shared],
        resamples=BOOTSTRAP_RESAMPLES,
        seed=seed,
    )
    cells = [
        f"{100 * result[m]['delta']:+.2f} [{100 * result[m]['low']:+.2f}, {100 * result[m]['high']:+.2f}]"
        for m in ("macro_f1", "accuracy")
    ]
    qwk = result["qwk"]
    cells.append(f"{qwk['delta']:+.3f} [{qwk['low']:+.3f}, {qwk['high']:+.3f}]")
    changed = [i for i in shared if before[i][1] != after[i][1]]
    to_right = sum(after[i][1] == after[i][0] for i in changed)
    to_wrong = sum(before[i][1] == before[i][0] for i in changed)
    cells.append(f"{len(changed)} ({to_right} / {to_wrong})")
    cells.append(p_value_cell(sign_test(to_right, to_wrong)))
    return f"| {label} | {result['n']} | {' | '.join(cells)} | {'yes' if result['beyond_noise'] else 'no'} |"


def p_value_cell(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
