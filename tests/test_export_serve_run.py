"""The export stage's output as an operator deploys it: `serve run export/serve.yaml` in its own
process and its own local Ray cluster, then a request over HTTP. The endpoint must serve the
exported model with the decision rule the export chose, not the repository's defaults."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, _free_port

pytestmark = pytest.mark.slow

SERVE = str(Path(sys.executable).with_name("serve"))


def transformers_probs(model: str, request: dict) -> np.ndarray:
    """P(level) of each request item from a float32 transformers forward of the served prompt."""
    from taosr.actors.scorer import LevelScorer
    from taosr.serve.app import prompt_inputs
    from taosr.serve.validation import RequestLimits, parse_request

    query, items = prompt_inputs(parse_request(json.dumps(request).encode(), RequestLimits()))
    reference = LevelScorer(model, engine="hf", dtype="float32")
    return reference.score_prompts(reference.prompts_for([query] * len(items), items))


@pytest.fixture(scope="module")
def exported(stage1_run, tmp_path_factory):
    """The export stage run once on the session's stage-1 run: (config, summary, export folder)."""
    from taosr.ray_jobs import export

    config, _, _, stage1_dir = stage1_run
    config = copy.deepcopy(config)
    run = tmp_path_factory.mktemp("exported") / "run"
    run.mkdir()
    config.run_dir = str(run)
    for stage in ("data", "sft"):  # the session's stage-1 run, read-only
        os.symlink(stage1_dir / stage, run / stage)
    config.serve.port = _free_port()
    config.export.max_examples = 40
    return config, export.run(config), run / "export"


def test_the_exported_serve_yaml_starts_the_endpoint_with_serve_run(exported):
    from taosr.decision import DecisionRule
    from taosr.ray_jobs.serve_check import sample_request, wait_until_healthy

    config, summary, served = exported
    deployment = yaml.safe_load((served / "serve.yaml").read_text())
    args = deployment["applications"][0]["args"]
    assert Path(args["model_path"]) == served / "model"
    chosen = json.loads((served / "decision.json").read_text())
    assert chosen["described"] == summary["rule"]
    card = (served / "MODEL_CARD.md").read_text()  # the folder carries the same card as its README
    assert card == (served / "model" / "README.md").read_text()
    assert f"**{summary['rule']}**, chosen on the `val` split" in card and "## The config that made it" in card

    # Its own cluster (`--address local`), as on a machine where nothing else runs Ray.
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    process = subprocess.Popen(
        [SERVE, "run", "--address", "local", str(served / "serve.yaml")],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{config.serve.port}"
    try:
        try:
            wait_until_healthy(url, timeout_s=300)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"serve run never became healthy:\n{process.communicate()[0][-4000:]}")
        health = httpx.get(f"{url}/healthz", timeout=10).json()
        assert health["decision"] == summary["rule"], health

        request = sample_request(config)
        response = httpx.post(f"{url}/v1/relevance", json=request, timeout=120)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["id"] for r in results] == [item["id"] for item in request["items"]]
        rule = DecisionRule(**chosen["chosen"])
        probs = np.array([[r["probs"][str(level)] for level in (4, 3, 2, 1)] for r in results])
        assert [r["level"] for r in results] == rule.levels(probs).tolist()
        # serve.yaml runs the compiled engine in the run's dtype (bfloat16, or float32 on a CPU
        # without native bf16): its distributions are a float32 forward's, up to bfloat16
        # rounding (a broken compile gives NaN or unrelated numbers)
        assert args["compile_engine"] is True and args["dtype"] == config.model.dtype
        np.testing.assert_allclose(probs, transformers_probs(str(served / "model"), request), atol=0.05)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # serve run's Ctrl-C: deletes the app, stops its cluster
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def test_taosr_serve_starts_a_local_cluster_and_stops_all_of_it_on_ctrl_c(exported):
    """No RAY_ADDRESS: `taosr serve` starts its own cluster; one SIGINT to it alone (not its
    process group) must leave no Ray process of its behind."""
    import time

    import psutil

    from taosr.ray_jobs.serve_check import wait_until_healthy

    config, summary, served = exported
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    taosr = str(Path(sys.executable).with_name("taosr"))
    process = subprocess.Popen(
        [taosr, "serve", str(served.parent), "--port", str(port)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", timeout_s=300)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"taosr serve never became healthy:\n{process.communicate()[0][-4000:]}")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()["decision"] == summary["rule"]
        started = psutil.Process(process.pid).children(recursive=True)
        assert any("raylet" in " ".join(child.cmdline()) for child in started)  # its own cluster
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=120)[0]
        assert process.returncode == 0, output[-3000:]
        deadline = time.time() + 30
        while time.time() < deadline and any(child.is_running() and child.status() != "zombie" for child in started):
            time.sleep(1)
        left = [child.pid for child in started if child.is_running() and child.status() != "zombie"]
        assert not left, f"{len(left)} of its {len(started)} processes still run after Ctrl-C"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
