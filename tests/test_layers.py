"""The layers of docs/architecture.md, read from the source: the core (taosr/) imports no Ray,
vLLM or DeepSpeed and nothing of the layers above it, and no library layer imports the
entrypoints (ray_jobs/). Every import statement counts, those inside functions too."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ABOVE_CORE = ("datasets", "actors", "training", "stages", "ray_jobs", "serve")
RUNTIMES = ("ray", "vllm", "deepspeed")


def imported_names(source: str) -> set[str]:
    """Every absolute module name an import statement anywhere in ``source`` names."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "taosr" and len(parts) > 1 and parts[1] in ABOVE_CORE else None


def offenders(folder: str, forbidden) -> dict[str, list[str]]:
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        bad = sorted(name for name in imported_names(path.read_text()) if forbidden(name))
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    return found


def test_the_walk_sees_imports_in_functions_and_from_imports():
    source = "import os\ndef f():\n    from taosr.ray_jobs import grpo\n    import ray.data\n"
    assert {"taosr.ray_jobs.grpo", "ray.data"} <= imported_names(source)
    assert layer_of("taosr.ray_jobs.grpo") == "ray_jobs" and layer_of("taosr.labels") is None


def test_the_core_imports_no_runtime_and_no_layer_above_it():
    assert offenders("taosr", lambda name: name.split(".")[0] in RUNTIMES or layer_of(name) is not None) == {}


def test_no_library_layer_imports_the_entrypoints():
    for folder in ("datasets", "actors", "training", "stages", "serve"):
        assert offenders(folder, lambda name: layer_of(name) == "ray_jobs") == {}, folder
    assert offenders("serve", lambda name: layer_of(name) in ("training", "stages")) == {}


def test_importing_every_core_module_loads_no_runtime():
    modules = sorted(f"taosr.{path.stem}" for path in (ROOT / "taosr").glob("*.py") if path.stem != "__init__")
    code = (
        f"import importlib, sys\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
        f"print(sorted(name for name in {RUNTIMES!r} if name in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_package_folder_links_each_layer_so_tools_resolve_it_without_an_install():
    """taosr/<layer> -> ../<layer>: what lets mypy and editors follow taosr.training and the rest."""
    for folder in ABOVE_CORE:
        link = ROOT / "taosr" / folder
        assert link.is_symlink(), f"taosr/{folder} should link to ../{folder}"
        assert link.resolve() == (ROOT / folder).resolve()
