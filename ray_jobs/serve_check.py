"""The pipeline's last stage: start the Ray Serve endpoint on the exported model and score one
sample request over HTTP, so a finished run is known to serve.

    ray job submit --working-dir . -- python -m taosr.ray_jobs.serve_check --config configs/tiny.yaml

Reads <run_dir>/export/serve.yaml (model and CumPT beta), starts the app on 127.0.0.1 at
``serve.port``, sends ``serve.sample_items`` held-out items of one test query to
``POST /v1/relevance`` and writes the request and the response to <run_dir>/serve/. The endpoint
is shut down afterwards unless ``serve.keep_running`` is set.
"""

from __future__ import annotations

import json
import sys
import time

import yaml

from taosr.config import TaosrConfig
from taosr.datasets.storage import join, read_parquet, read_text, write_json
from taosr.stages.job_args import run_job
from taosr.stages.registry import StageSpec


def sample_request(config: TaosrConfig) -> dict:
    """One test-split query with up to ``serve.sample_items`` of its judged items, in the API's shape."""

    from taosr.prompts import item_from_row

    rows = (
        read_parquet(join(config.run_dir, "data", "accepted"), config.data.s3_endpoint)
        .filter(expr=f"split == '{config.eval.split}'")
        .take(200)
    )
    if not rows:
        raise ValueError(f"no {config.eval.split!r} rows under {config.run_dir}/data to build a sample request from")
    query = rows[0]["query"]
    items = []
    for row in [r for r in rows if r["query"] == query][: config.serve.sample_items]:
        item = item_from_row(row)
        entry: dict[str, object] = {"id": str(row["id"]), "title": item.title}
        if item.category:
            entry["category"] = item.category if isinstance(item.category, str) else " > ".join(item.category)
        if item.attributes:
            entry["attributes"] = {str(k): str(v) for k, v in item.attributes.items()}
        if item.price is not None:
            entry["price"] = item.price
        items.append(entry)
    return {"query": query, "items": items}


def wait_until_healthy(url: str, timeout_s: float) -> None:
    import httpx

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise TimeoutError(f"the endpoint at {url} was not healthy within {timeout_s:.0f} s")


def run(config: TaosrConfig) -> dict:
    import httpx
    from ray import serve

    from taosr.serve.app import run as start_app

    deployment = yaml.safe_load(read_text(join(config.run_dir, "export", "serve.yaml"), config.data.s3_endpoint))
    args = dict(deployment["applications"][0]["args"])
    if not config.serve.keep_running:
        # One request to check the export end to end: compiling the engine would add ~1.5 min
        # and check nothing more (the compiled engine is tested by test_export_serve_run).
        args["compile_engine"] = False
    # The check's endpoint listens on the head's loopback only, so it needs none of the keys a
    # cluster's exported endpoint requires (serve.exposure).
    args["api_keys_env"] = ""
    url = start_app(
        args.pop("model_path"),
        port=config.serve.port,
        request_timeout_s=deployment["http_options"].get("request_timeout_s", 30),
        **args,
    )
    try:
        wait_until_healthy(url, timeout_s=600)
        request = sample_request(config)
        started = time.time()
        response = httpx.post(f"{url}/v1/relevance", json=request, timeout=120)
        latency = time.time() - started
        if response.status_code != 200:
            raise RuntimeError(f"the endpoint answered {response.status_code}: {response.text[:500]}")
        body = response.json()
        write_json(
            join(config.run_dir, "serve", "sample.json"),
            {"url": url, "request": request, "response": body, "latency_s": latency},
            config.data.s3_endpoint,
        )
        print(f"curl -s {url}/v1/relevance -H 'content-type: application/json' -d '{json.dumps(request)[:160]}...'")
        for item, result in zip(request["items"], body["results"]):
            print(
                f"  {result['label']:<13} tier {result['tier']:<4} p4={result['probs']['4']:.2f}  {item['title'][:70]}"
            )
        if config.serve.keep_running:
            print(f"serving at {url} (Ctrl-C stops it)", flush=True)
            while True:
                time.sleep(3600)
        return {
            "url": url,
            "items": len(body["results"]),
            "latency_s": round(latency, 3),
            "levels": [r["level"] for r in body["results"]],
        }
    finally:
        if not config.serve.keep_running:
            serve.shutdown()


STAGE = StageSpec("serve", ("serve",), ("export",), always_run=True, run=run)


def main(argv=None) -> int:
    return run_job(STAGE.run, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
