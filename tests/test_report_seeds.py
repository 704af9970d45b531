"""The seed table from hand-made run folders: per-seed figures, mean ± sd, paired rows."""

import json

from taosr.report_seeds import seed_table


def _run(folder, scores: dict[str, tuple[float, float, list[int]]]):
    """eval/<slug>/ with metrics.json (macro-F1, QWK) and the predictions of 4 rows (gold 1-4)."""
    (folder / "eval").mkdir(parents=True)
    (folder / "eval" / "rows.json").write_text(json.dumps([[slug, slug.upper()] for slug in scores]))
    for slug, (macro_f1, qwk, preds) in scores.items():
        (folder / "eval" / slug).mkdir()
        (folder / "eval" / slug / "metrics.json").write_text(
            json.dumps({"overall": {"macro_f1": macro_f1, "qwk": qwk, "n": 4}})
        )
        (folder / "eval" / slug / "predictions.jsonl").write_text(
            "\n".join(json.dumps({"id": str(i), "label": i + 1, "pred": p}) for i, p in enumerate(preds))
        )
    return folder


def test_mean_and_sd_over_seeds_and_a_paired_row_per_seed(tmp_path):
    runs = {
        0: _run(tmp_path / "seed-0", {"lexical": (0.40, 0.30, [1, 2, 2, 4]), "sft": (0.50, 0.50, [1, 2, 3, 4])}),
        1: _run(tmp_path / "seed-1", {"lexical": (0.40, 0.30, [1, 2, 2, 4]), "sft": (0.30, 0.20, [1, 1, 3, 3])}),
    }
    table = seed_table(runs)
    # sft macro-F1 50.0 and 30.0: mean 40.0, sample sd 14.1; QWK 0.500 and 0.200: 0.350 ± 0.212.
    assert "| SFT | 50.0 | 30.0 | 40.0 ± 14.1 |" in table
    assert "| SFT | 0.500 | 0.200 | 0.350 ± 0.212 |" in table
    assert "| LEXICAL | 40.0 | 40.0 | 40.0 ± 0.0 |" in table
    rows = [line for line in table.splitlines() if line.startswith("| LEXICAL → SFT")]
    assert len(rows) == 2 and rows[0].endswith(" 0 |") and rows[1].endswith(" 1 |")
    # seed 0 changed one row (gold 3: 2 -> 3, to right); seed 1 three (gold 2: 2 -> 1, to wrong;
    # gold 3: 2 -> 3, to right; gold 4: 4 -> 3, to wrong).
    assert "| 1 (1 / 0) |" in rows[0] and "| 3 (1 / 2) |" in rows[1]
