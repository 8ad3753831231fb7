"""The benchmark harness (see README.md here): modules run from the repository root as

    python -m benchmarks.run [--quick] [--only latency,roi] [--out DIR]   # RESULTS.md, plots, results.json
    python -m benchmarks.interleaved_latency [PAIRS]

(``python benchmarks/run.py`` and ``python benchmarks/interleaved_latency.py`` still work: they
restart themselves as these modules). The sections import each other package-relatively.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: the folder that holds this package (the repository root)
ROOT = Path(__file__).resolve().parents[1]


def module_command(module: str, *args: str) -> list[str]:
    """``[python, -m, benchmarks.MODULE, *args]``: a command line that runs one of these modules in a
    fresh process (with :func:`module_env`)."""
    return [sys.executable, "-m", f"{__name__}.{module}", *args]


def module_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) with :data:`ROOT` first on ``PYTHONPATH``, so
    that a child process imports this package (and this checkout's ``fcis``) whatever its working
    directory."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env
