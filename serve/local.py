"""``taosr serve``: the exported Serve config (export/serve.yaml) on this machine. Joins the
cluster in RAY_ADDRESS (or ``--address``) when there is one; otherwise starts a local Ray
cluster owned by this process, and on Ctrl-C (or SIGTERM) shuts down Serve and that cluster
with it, so no Ray process is left behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import yaml


def serve_args(serve_yaml: str) -> tuple[str, dict, dict]:
    """(model folder, the app's other args, http_options) of an export/serve.yaml."""
    path = Path(serve_yaml)
    if path.is_dir():
        path = path / "export" / "serve.yaml" if (path / "export").is_dir() else path / "serve.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{serve_yaml}: no serve.yaml there (the export stage writes <run_dir>/export/serve.yaml)"
        )
    deployment = yaml.safe_load(path.read_text())
    try:
        args = dict(deployment["applications"][0]["args"])
        model = args.pop("model_path")
    except (KeyError, IndexError, TypeError) as error:
        raise ValueError(f"{path}: not a Serve config with an application and its model_path ({error})") from error
    return model, args, deployment.get("http_options") or {}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve_forever(serve_yaml: str, address: str = "", host: str = "", port: int = 0) -> None:
    """Start the app and block until Ctrl-C or SIGTERM; then stop what this process started."""
    import ray
    from ray import serve

    from taosr.serve.app import run as start_app

    model, args, http = serve_args(serve_yaml)
    ray.init(address=address or os.environ.get("RAY_ADDRESS") or None)
    signal.signal(signal.SIGTERM, _interrupt)  # a stop from a process manager cleans up as Ctrl-C does
    try:
        url = start_app(
            model,
            host=host or http.get("host", "127.0.0.1"),
            port=port or int(http.get("port", 8000)),
            request_timeout_s=http.get("request_timeout_s", 30),
            **args,
        )
        print(f"serving {model} at {url} (Ctrl-C stops it)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()  # a cluster this process started goes with it; a joined one stays
