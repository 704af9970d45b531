"""A check that ``data.label_bins`` fits the logs it is applied to.

Bins turn graded scores into levels (a mean rating of 2.4 on 1-3 becomes level 3). Applied to
logs whose labels are already the levels 1-4, they relabel rows without an error: with bins
{4: 2.75, 3: 2.25, 2: 1.5, 1: 1.0}, every 3 becomes a 4. The data stage therefore counts, over
the accepted rows whose label went through the bins, how many raw grades were whole numbers
1-4 and how many of those the bins moved to another level, and stops the run with the cause
when the grades look like levels already.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pyarrow as pa

LEVELS = (1, 2, 3, 4)


class LabelBinsError(ValueError):
    """The logs' labels are levels already, or the bins would move most of them."""


@dataclass
class BinnedGrades:
    """What the bins did to the accepted rows (added up over batches)."""

    binned: int = 0  # rows whose label came through the bins
    whole: dict[int, int] = field(default_factory=dict)  # raw grades that are whole numbers 1-4: {grade: rows}
    moved: dict[tuple[int, int], int] = field(default_factory=dict)  # {(grade, level it got): rows}, grade != level

    def add(self, other: "BinnedGrades") -> "BinnedGrades":
        self.binned += other.binned
        for grade, count in other.whole.items():
            self.whole[grade] = self.whole.get(grade, 0) + count
        for pair, count in other.moved.items():
            self.moved[pair] = self.moved.get(pair, 0) + count
        return self


def count_binned(rows) -> BinnedGrades:
    """Count accepted rows (dicts with ``label`` and ``extra``); a binned row keeps its grade in
    ``extra`` as ``label_raw``."""
    counts = BinnedGrades()
    for row in rows:
        raw = json.loads(row["extra"]).get("label_raw") if row.get("extra") else None
        grade = _grade(raw)
        if grade is None:
            continue
        counts.binned += 1
        if grade.is_integer() and int(grade) in LEVELS:
            whole = int(grade)
            counts.whole[whole] = counts.whole.get(whole, 0) + 1
            if whole != row["label"]:
                counts.moved[(whole, row["label"])] = counts.moved.get((whole, row["label"]), 0) + 1
    return counts


def problem(counts: BinnedGrades) -> str | None:
    """The reason to stop, or None when the bins fit. Two cases: every binned grade is a whole
    number 1-4 and 4 is among them (the labels are levels already), or most grades are whole
    numbers 1-4 and the bins give most of those another level."""
    level_like = sum(counts.whole.values())
    if not counts.binned or not level_like:
        return None
    moved = sum(counts.moved.values())
    examples = ", ".join(f"{grade} -> {level} ({n} rows)" for (grade, level), n in sorted(counts.moved.items()))
    fix = (
        "remove the bins (data.label_bins={} on the command line, or drop label_bins from the profile), "
        "or map levels explicitly with data.label_aliases"
    )
    seen = ", ".join(f"{grade}: {counts.whole[grade]}" for grade in sorted(counts.whole))
    if level_like == counts.binned and 4 in counts.whole:
        return (
            f"data.label_bins is set, but every one of the {counts.binned} labels is already a level 1-4 "
            f"({seen}); the bins would relabel {moved} of them ({examples or 'none'}). Fix: {fix}"
        )
    if 2 * level_like > counts.binned and 2 * moved > level_like:
        return (
            f"data.label_bins would give {moved} of the {level_like} labels that are whole levels 1-4 another "
            f"level ({examples}). Fix: check the bins against the logs' grading scale, or {fix}"
        )
    return None


def check(accepted_ds) -> BinnedGrades:
    """Count what the bins did over a Ray dataset of accepted rows (one small record per block,
    added up on the driver) and raise ``LabelBinsError`` when they do not fit the logs."""
    partials = (
        accepted_ds.select_columns(["label", "extra"]).map_batches(_count_batch, batch_format="pyarrow").take_all()
    )
    counts = BinnedGrades()
    for partial in partials:
        counts.add(
            BinnedGrades(
                partial["binned"],
                {int(k): v for k, v in json.loads(partial["whole"]).items()},
                {_pair(k): v for k, v in json.loads(partial["moved"]).items()},
            )
        )
    reason = problem(counts)
    if reason:
        raise LabelBinsError(reason)
    return counts


def _count_batch(batch: pa.Table) -> pa.Table:
    counts = count_binned(batch.to_pylist())
    return pa.table(
        {
            "binned": [counts.binned],
            "whole": [json.dumps(counts.whole)],
            "moved": [json.dumps({f"{g}>{lv}": n for (g, lv), n in counts.moved.items()})],
        }
    )


def _grade(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _pair(key: str) -> tuple[int, int]:
    """A moved-labels key as the partial counts store it ("3>4": from level 3 to level 4)."""
    before, after = key.split(">")
    return int(before), int(after)
