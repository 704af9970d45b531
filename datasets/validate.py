"""Validation of raw log records on Ray Data: every input row ends up either accepted (clean,
normalised) or quarantined with a reason, and input = accepted + quarantined is checked, so no
row is ever silently lost. Duplicate ids keep their first occurrence (by source, then line) and
quarantine the rest. With ``data.label_bins`` set, logs whose labels are already levels stop
here with the cause (``label_bins``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

import pyarrow as pa

from taosr.datasets import label_bins
from taosr.datasets.schema import ACCEPTED_COLUMNS, QUARANTINE_COLUMNS, Limits, RowError, normalise_row, rename_columns
from taosr.datasets.splits import assign_split, query_sampled

_RAW_KEEP = 4000  # characters of the raw row kept in quarantine

PARSED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("query_id", pa.string()),
        ("query", pa.string()),
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("attributes", pa.string()),
        ("price", pa.float64()),
        ("description", pa.string()),
        ("label", pa.int64()),
        ("query_type", pa.string()),
        ("rule_ids", pa.list_(pa.string())),
        ("step_annotations", pa.string()),
        ("extra", pa.string()),
        ("source", pa.string()),
        ("line", pa.int64()),
        ("split", pa.string()),
        ("ok", pa.bool_()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.string()),
    ]
)


class DataLossError(RuntimeError):
    """Raised when accepted + quarantined does not add up to the input count."""


@dataclass
class ValidationResult:
    accepted: Any  # ray.data.Dataset with ACCEPTED_COLUMNS + split
    quarantined: Any  # ray.data.Dataset with QUARANTINE_COLUMNS
    counts: dict  # {"input", "accepted", "quarantined", "reasons": {reason: n}}


class RowValidator:
    """Batch function: raw records in, parsed rows (ok or with a reason) out."""

    def __init__(
        self,
        limits: Limits,
        label_aliases: Mapping,
        columns: Mapping,
        split_fractions: Mapping,
        seed: int,
        label_bins: Mapping | None = None,
        require_label: bool = True,
    ):
        self.limits = limits
        self.label_aliases = dict(label_aliases)
        self.label_bins = dict(label_bins or {})
        self.require_label = require_label
        self.columns = dict(columns)
        self.split_fractions = dict(split_fractions)
        self.seed = seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
        for record in batch.to_pylist():
            out.append(self.one(record))
        return pa.Table.from_pylist(out, schema=PARSED_SCHEMA)

    def one(self, record: Mapping) -> dict:
        base = {"source": record["source"], "line": record["line"], "raw": None, "ok": False}
        if record["error"]:
            return {
                **base,
                "reason": record["error"],
                "detail": "row could not be decoded",
                "raw": record["raw"][:_RAW_KEEP],
            }
        try:
            raw = json.loads(record["raw"])
            row = normalise_row(
                rename_columns(raw, self.columns) if isinstance(raw, dict) else raw,
                self.limits,
                self.label_aliases,
                self.label_bins,
                self.require_label,
            )
        except RowError as error:
            return {**base, "reason": error.reason, "detail": error.detail[:500], "raw": record["raw"][:_RAW_KEEP]}
        row.update(base, ok=True, reason=None, detail=None)
        row["split"] = assign_split(row["query"], self.split_fractions, self.seed)
        return row


def validate_records(raw_ds, data_config, require_label: bool = True) -> ValidationResult:
    """Validate a dataset of raw records (from ``readers.read_raw_records``); ``require_label``
    False accepts unlabelled rows (label None), for prediction."""
    validator = RowValidator(
        Limits.from_config(data_config),
        data_config.label_aliases,
        data_config.columns,
        data_config.split_fractions,
        data_config.seed,
        data_config.label_bins,
        require_label,
    )
    parsed = raw_ds.map_batches(validator, batch_format="pyarrow").materialize()
    total = parsed.count()
    good = parsed.filter(expr="ok")
    bad = parsed.filter(expr="not ok")

    # Few hash partitions: the default (200) costs seconds per shuffle on a small box.
    partitions = max(1, min(64, parsed.num_blocks()))
    losers = _duplicate_losers(good, partitions)
    if losers:
        marked = good.map_batches(_mark_duplicates, fn_kwargs={"losers": losers}, batch_format="pyarrow").materialize()
        good = marked.filter(expr="ok")
        bad = bad.union(marked.filter(expr="not ok"))
    accepted = good.select_columns(list(ACCEPTED_COLUMNS) + ["split"]).materialize()
    quarantined = bad.select_columns(list(QUARANTINE_COLUMNS)).materialize()
    if data_config.label_bins:
        label_bins.check(accepted)  # stops before anything is written when the bins would relabel levels
    sampled_out = 0
    if data_config.max_rows and accepted.count() > data_config.max_rows:
        before = accepted.count()
        share = data_config.max_rows / before
        accepted = accepted.filter(lambda row: query_sampled(row["query"], share, data_config.seed)).materialize()
        sampled_out = before - accepted.count()

    counts = {"input": total, "accepted": accepted.count(), "quarantined": quarantined.count()}
    if sampled_out:
        counts["sampled_out"] = sampled_out
    reasons: Counter[str] = Counter()
    for row in quarantined.groupby("reason", num_partitions=1).count().take_all():
        reasons[row["reason"]] = row["count()"]
    counts["reasons"] = dict(sorted(reasons.items()))
    if counts["accepted"] + counts["quarantined"] + sampled_out != total:
        raise DataLossError(f"row counts do not add up: {counts}")
    return ValidationResult(accepted, quarantined, counts)


def _duplicate_losers(good, partitions: int) -> list[list]:
    """[source, line] of every row whose id appeared earlier; only duplicated ids reach the driver."""
    duplicated = [
        row["id"]
        for row in good.groupby("id", num_partitions=partitions)
        .count()
        .filter(lambda row: row["count()"] > 1)
        .take_all()
    ]
    if not duplicated:
        return []
    wanted = set(duplicated)
    seen = good.select_columns(["id", "source", "line"]).filter(lambda row: row["id"] in wanted).take_all()
    by_id: dict[str, list[tuple[str, int]]] = {}
    for row in seen:
        by_id.setdefault(row["id"], []).append((row["source"], row["line"]))
    losers = []
    for places in by_id.values():
        losers.extend([list(place) for place in sorted(places)[1:]])
    return losers


def _mark_duplicates(batch: pa.Table, losers: list[list]) -> pa.Table:
    keys = {(source, line) for source, line in losers}
    rows = batch.to_pylist()
    for row in rows:
        if (row["source"], row["line"]) in keys:
            row.update(
                ok=False,
                reason="duplicate_id",
                detail=f"id {row['id']!r} appeared earlier",
                raw=json.dumps({k: row[k] for k in ("id", "query", "title")}, ensure_ascii=False),
            )
    return pa.Table.from_pylist(rows, schema=batch.schema)
