"""Export: the model the endpoint will serve, with the CumPT threshold chosen for it.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.export --config configs/tiny.yaml

Copies the chosen stage's model (``export.model_stage``; by default the latest trained stage)
to <run_dir>/export/model with its prompt-template and tokenizer record (the endpoint refuses a
folder without a matching one), scores the ``export.beta_split`` split with it by the
first-token distribution, sweeps CumPT's beta there and writes:

    export/model/        the served model
    export/beta/         predictions, cumpt_sweep.json and cumpt_sweep.png
    export/serve.yaml    serve/config.yaml with this model and beta (``serve run export/serve.yaml``)
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import yaml

from taosr.config import TaosrConfig
from taosr.datasets.storage import absolute, copy_tree, join, remove_tree
from taosr.ray_jobs.job_args import run_job
from taosr.ray_jobs.policies import POLICY_STAGES, latest_policy

SERVE_CONFIG = Path(__file__).resolve().parent.parent / "serve" / "config.yaml"


def chosen_model(config: TaosrConfig) -> tuple[str, str]:
    """(stage, model folder) of ``export.model_stage``."""
    wanted = config.export.model_stage
    if wanted != "last" and wanted not in POLICY_STAGES:
        raise ValueError(f"export.model_stage must be one of last, {', '.join(POLICY_STAGES)}; got {wanted!r}")
    return latest_policy(config.run_dir, config.data.s3_endpoint, POLICY_STAGES if wanted == "last" else (wanted,))


def serve_config(model_path: str, beta: float, port: int, gpus_per_replica: float = 0.0,
                 tensor_parallel_size: int = 1) -> dict:
    """The repo's Serve config with this model and threshold; on a GPU profile each model
    replica asks Ray for its GPUs (the eval engines' share)."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["http_options"]["port"] = port
    application = config["applications"][0]
    args = application["args"]
    args["model_path"], args["beta"] = absolute(model_path), float(beta)
    if gpus_per_replica:
        model = next(d for d in application["deployments"] if d["name"] == "LevelModel")
        model["ray_actor_options"]["num_gpus"] = float(gpus_per_replica)
        args["tensor_parallel_size"] = int(tensor_parallel_size)
    return config


def record_beta(model_dir: str, beta: float, split: str) -> None:
    """Write the chosen beta into the model's record, so batch prediction tiers like serving."""
    import json

    from taosr.models import MODEL_INFO

    path = Path(model_dir, MODEL_INFO)
    record = json.loads(path.read_text())
    record.update(cumpt_beta=float(beta), cumpt_beta_split=split)
    path.write_text(json.dumps(record, indent=2))


def run(config: TaosrConfig) -> dict:
    from taosr.cumpt_sweep import sweep_and_plot
    from taosr.models import export_model
    from taosr.ray_jobs.eval import evaluate_model

    stage, source = chosen_model(config)
    out = join(config.run_dir, "export")
    endpoint = config.data.s3_endpoint
    with tempfile.TemporaryDirectory() as scratch:  # built locally, then copied to run_dir (local or s3://)
        local_source = source
        if source.startswith("s3://"):
            local_source = str(Path(scratch, "source"))
            copy_tree(source, local_source, endpoint)
        local_model = export_model(local_source, str(Path(scratch, "export", "model")))
        held_out = dataclasses.replace(config, eval=dataclasses.replace(
            config.eval, split=config.export.beta_split, max_examples=config.export.max_examples, decode_samples=0))
        beta_dir = str(Path(scratch, "export", "beta"))
        metrics = evaluate_model(held_out, f"export-{stage}", local_model, out=beta_dir)
        sweep = sweep_and_plot(join(beta_dir, "predictions.jsonl"), beta_dir, metric=config.export.beta_metric)
        record_beta(local_model, sweep["best_beta"], config.export.beta_split)
        served = serve_config(join(out, "model"), sweep["best_beta"], config.serve.port,
                              config.eval.num_gpus_per_engine, config.eval.tensor_parallel_size)
        Path(scratch, "export", "serve.yaml").write_text(yaml.safe_dump(served, sort_keys=False))
        remove_tree(out, endpoint)
        copy_tree(str(Path(scratch, "export")), out, endpoint)
    return {"stage": stage, "model": join(out, "model"), "beta": sweep["best_beta"], "beta_split": config.export.beta_split,
            "n": sweep["n"], config.export.beta_metric: sweep[config.export.beta_metric],
            "level_macro_f1": metrics["overall"]["macro_f1"]}


def main(argv=None) -> int:
    return run_job(run, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
