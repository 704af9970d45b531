"""Which models the eval stage puts side by side (no Ray: the scorers are replaced by stubs that
record what they were asked to score)."""

import json

import pytest

from taosr.config import load_config


@pytest.mark.parametrize("untrained", [True, False])
def test_eval_scores_the_untrained_base_only_when_asked(tmp_path, monkeypatch, untrained):
    import taosr.ray_jobs.eval as eval_job
    from taosr.ray_jobs.eval import evaluate_all

    scored = []
    overall = {"n": 4, "macro_f1": 0.5, "accuracy": 0.5, "qwk": 0.1}
    monkeypatch.setattr(eval_job, "evaluate_lexical", lambda config: scored.append("lexical") or {"overall": overall})
    monkeypatch.setattr(
        eval_job, "evaluate_model", lambda config, slug, path: scored.append((slug, path)) or {"overall": overall}
    )
    (tmp_path / "sft" / "model").mkdir(parents=True)
    (tmp_path / "sft" / "model" / "config.json").write_text("{}")
    config = load_config(None, [f"run_dir={tmp_path}", f"eval.untrained={str(untrained).lower()}"])

    table = evaluate_all(config, "/models/base")

    base = ("base", "/models/base")
    assert scored[0] == "lexical" and ("sft", str(tmp_path / "sft" / "model")) in scored
    assert (base in scored) is untrained
    assert any("untrained" in name for name in table) is untrained
    assert (tmp_path / "eval" / "stages.md").exists()
    rows = json.loads((tmp_path / "eval" / "rows.json").read_text())  # what the report shows, in order
    assert [slug for slug, _ in rows] == ["lexical", *(["base"] if untrained else []), "sft"]
