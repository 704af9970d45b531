"""taosr: Taobao-style "thinking" relevance models (TaoSR1, TaoSR-SHE) trained and served on Ray.

The user-facing folders ``actors/``, ``datasets/``, ``ray_jobs/`` and ``serve/`` sit at the
repository root and are importable as ``taosr.actors`` and so on. An install maps them through
``package-dir`` in pyproject.toml; from a source checkout we add the root to this package's
search path so ``python -m taosr.ray_jobs.<stage>`` and ``ray job submit --working-dir .`` work
without installing.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_root = _Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "ray_jobs").is_dir():
    if str(_root) not in __path__:
        __path__.append(str(_root))
