"""Export: the model the endpoint will serve, with the decision rule chosen for it.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.export --config configs/tiny.yaml

Copies the chosen stage's model (``export.model_stage``; by default the latest trained stage)
to <run_dir>/export/model with its prompt-template and tokenizer record (the endpoint refuses a
folder without a matching one), scores the ``export.beta_split`` split with it by the
first-token distribution, chooses the decision rule there (CumPT's beta, or an argmax with the
level prior divided out: ``taosr.decision``) and writes:

    export/model/        the served model, its record naming the rule (batch prediction applies it)
    export/beta/         predictions, cumpt_sweep.json and cumpt_sweep.png
    export/decision.json every candidate rule's metrics on that split, the chosen one, and, when
                         the eval stage scored this model, the chosen rule and the plain argmax
                         on the eval split (the decisions users get, next to the table's argmax)
    export/serve.yaml    serve/config.yaml with this model and rule (``serve run export/serve.yaml``)
    export/MODEL_CARD.md the model card (``taosr.model_card``), also the model folder's README.md
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import yaml

from taosr.config import TaosrConfig
from taosr.decision import DecisionRule
from taosr.datasets.storage import copy_tree, join, remove_tree
from taosr.stages.job_args import run_job
from taosr.stages.policies import latest_policy
from taosr.stages.registry import StageSpec, policy_stages
from taosr.serve.deployment import serve_config


def chosen_model(config: TaosrConfig) -> tuple[str, str]:
    """(stage, model folder) of ``export.model_stage``."""
    wanted, policies = config.export.model_stage, tuple(policy_stages())
    if wanted != "last" and wanted not in policies:
        raise ValueError(f"export.model_stage must be one of last, {', '.join(policies)}; got {wanted!r}")
    return latest_policy(config.run_dir, config.data.s3_endpoint, policies if wanted == "last" else (wanted,))


def record_rule(model_dir: str, rule: DecisionRule, split: str) -> None:
    """Write the chosen rule into the model's record, so batch prediction decides like serving."""
    import json

    from taosr.models import MODEL_INFO

    path = Path(model_dir, MODEL_INFO)
    record = json.loads(path.read_text())
    record.update(
        decision_rule=rule.to_record(), decision_rule_split=split, cumpt_beta=float(rule.beta), cumpt_beta_split=split
    )
    path.write_text(json.dumps(record, indent=2))


def decision_on_eval_split(config: TaosrConfig, stage: str, rule: DecisionRule) -> dict | None:
    """The chosen rule and the plain argmax on the eval stage's predictions of this model (the
    split the table reports), or None when eval has not scored it."""
    from taosr.cumpt_sweep import parse_predictions
    from taosr.datasets.storage import exists, read_text
    from taosr.metrics import classification_metrics

    path = join(config.run_dir, "eval", stage, "predictions.jsonl")
    if not exists(path, config.data.s3_endpoint):
        return None
    probs, gold = parse_predictions(read_text(path, config.data.s3_endpoint), path)
    return {
        "split": config.eval.split,
        "n": len(gold),
        "chosen": classification_metrics(gold, rule.levels(probs).tolist()),
        "argmax": classification_metrics(gold, DecisionRule("argmax").levels(probs).tolist()),
    }


def run_model_card(config: TaosrConfig, stage: str, model_dir: str, decision: dict, scratch: str) -> str:
    """The exported model's card (``taosr.model_card``) from the run's files; an s3:// run's
    metrics and summaries are read from a local copy."""
    import json

    from taosr.config import to_yaml
    from taosr.datasets.storage import copy_small_files
    from taosr.model_card import model_card
    from taosr.models import MODEL_INFO

    run = Path(config.run_dir)
    if "://" in config.run_dir:
        run = Path(scratch, "run-files")
        for part in ("eval", "data", "srpo"):
            copy_small_files(
                join(config.run_dir, part),
                str(run / part),
                config.data.s3_endpoint,
                suffixes=(".json", ".jsonl", ".md"),
            )
    info = json.loads(Path(model_dir, MODEL_INFO).read_text())
    return model_card(
        run,
        stage,
        info,
        decision,
        to_yaml(config),
        base_model=config.model.name,
        source=config.data.source,
        split=config.eval.split,
        seed=config.seed,
    )


def run(config: TaosrConfig) -> dict:
    import json

    from taosr.cumpt_sweep import read_predictions, sweep_and_plot
    from taosr.decision import choose_rule
    from taosr.models import export_model
    from taosr.ray_jobs.eval import evaluate_model

    stage, source = chosen_model(config)
    out = join(config.run_dir, "export")
    endpoint = config.data.s3_endpoint
    metric = config.export.beta_metric
    with tempfile.TemporaryDirectory() as scratch:  # built locally, then copied to run_dir (local or s3://)
        local_source = source
        if source.startswith("s3://"):
            local_source = str(Path(scratch, "source"))
            copy_tree(source, local_source, endpoint)
        local_model = export_model(local_source, str(Path(scratch, "export", "model")))
        held_out = dataclasses.replace(
            config,
            eval=dataclasses.replace(
                config.eval, split=config.export.beta_split, max_examples=config.export.max_examples, decode_samples=0
            ),
        )
        beta_dir = str(Path(scratch, "export", "beta"))
        metrics = evaluate_model(held_out, f"export-{stage}", local_model, out=beta_dir)
        sweep = sweep_and_plot(join(beta_dir, "predictions.jsonl"), beta_dir, metric=metric)
        rule, candidates = choose_rule(
            *read_predictions(join(beta_dir, "predictions.jsonl")),
            metric=metric,
            keep_argmax_within_noise=config.export.keep_argmax_within_noise,
            seed=config.seed,
        )
        record_rule(local_model, rule, config.export.beta_split)
        decision = {
            "metric": metric,
            "split": config.export.beta_split,
            "n": sweep["n"],
            "chosen": rule.to_record(),
            "described": rule.describe(),
            "candidates": candidates,
            "on_eval_split": decision_on_eval_split(config, stage, rule),
        }
        Path(scratch, "export", "decision.json").write_text(json.dumps(decision, indent=2))
        card = run_model_card(config, stage, local_model, decision, scratch)
        Path(scratch, "export", "MODEL_CARD.md").write_text(card)
        Path(local_model, "README.md").write_text(card)  # what a tool that opens the folder shows
        served = serve_config(join(out, "model"), rule, config)
        Path(scratch, "export", "serve.yaml").write_text(yaml.safe_dump(served, sort_keys=False))
        remove_tree(out, endpoint)
        copy_tree(str(Path(scratch, "export")), out, endpoint)
    chosen = next(row for row in candidates if row["rule"] == rule.describe())
    return {
        "stage": stage,
        "model": join(out, "model"),
        "rule": rule.describe(),
        "beta_split": config.export.beta_split,
        "n": sweep["n"],
        metric: chosen[metric],
        "level_macro_f1": metrics["overall"]["macro_f1"],
        "on_eval_split": decision["on_eval_split"]
        and {
            name: {key: decision["on_eval_split"][name][key] for key in ("macro_f1", "qwk", "accuracy")}
            for name in ("chosen", "argmax")
        },
    }


STAGE = StageSpec("export", ("export", "eval"), ("data",), reads_policies=True, run=run)


def main(argv=None) -> int:
    return run_job(STAGE.run, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
