"""taosr: Taobao-style "thinking" relevance models (TaoSR1, TaoSR-SHE) trained and served on Ray.

The layers above this core (``datasets/``, ``actors/``, ``training/``, ``stages/``, ``ray_jobs/``
and ``serve/``, docs/architecture.md) sit at the repository root and are importable as
``taosr.datasets`` and so on. An install maps them through ``package-dir`` in pyproject.toml.
In a source checkout this folder holds a link to each of them (``taosr/training -> ../training``),
so editors, mypy and ``python -m taosr.ray_jobs.<stage>`` resolve them as they are, and nothing
else at the root (tests, bench) becomes part of the package. Where a copy lost the links (an
archive without symlinks), a finder maps exactly those names to their folders.
"""

import importlib.machinery as _machinery
import sys as _sys
from pathlib import Path as _Path

__version__ = "0.1.0"

_FOLDERS = ("actors", "datasets", "training", "stages", "ray_jobs", "serve")
_root = _Path(__file__).resolve().parent.parent


class _SourceFolders:
    """Finds ``taosr.<folder>`` in the source checkout's root, and nothing else; consulted only
    after the normal import system (an installed taosr) found nothing."""

    names = frozenset(f"{__name__}.{folder}" for folder in _FOLDERS)

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname not in cls.names:
            return None
        # PathFinder looks for the last part of the name ("datasets") in the given folder and
        # keeps the full name: a namespace folder (datasets/, no __init__.py) works as well.
        return _machinery.PathFinder.find_spec(fullname, [str(_root)])


if (_root / "pyproject.toml").is_file() and (_root / "ray_jobs").is_dir():
    if not any(finder is _SourceFolders for finder in _sys.meta_path):
        _sys.meta_path.append(_SourceFolders)
