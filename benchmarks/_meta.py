"""What every benchmark result records: machine, versions, commit, time."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path

# In a source checkout (the editable install the README sets up) results go beside this file, where
# they are committed; an installed copy writes to the current directory instead of site-packages.
_HERE = Path(__file__).resolve().parent
CHECKOUT = _HERE.parent if (_HERE.parent / "setup.cfg").is_file() else None
RESULTS = _HERE / "results" if CHECKOUT is not None else Path.cwd() / "bench-results"
DEFAULT_DATASETS = (CHECKOUT or Path.cwd()).parent / "shared" / "datasets"  # ../shared/datasets, read in place


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _commit() -> str:
    if os.environ.get("GRAVITI_COMMIT"):  # a copy of the tree shipped elsewhere (GPU machine) names its commit
        return os.environ["GRAVITI_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=_HERE, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               cwd=_HERE).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict:
    """The machine and software a result was measured on."""
    import psutil

    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:
        pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "gpu": gpu,
            "platform": platform.platform(),
        },
        "versions": {name: _version(name) for name in ("torch", "dgl", "ray", "pyarrow", "numpy", "torch_geometric")}
        | {"python": platform.python_version()},
    }


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling and rename it: a reader never sees half a result."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_result(name: str, payload: dict) -> Path:
    """Write ``results/<name>.json`` with the environment attached."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    write_whole(path, json.dumps({"environment": environment(), **payload}, indent=2))
    return path
