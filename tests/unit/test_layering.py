"""Holds the dependency rules of ARCHITECTURE.md by parsing imports."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "graviti_dist"


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), _imports(path)


def test_only_the_entry_point_imports_dgl():
    offenders = [m for m, names in _modules() if m != "_dgl.py" and any(n == "dgl" or n.startswith("dgl.") for n in names)]
    assert offenders == []


def test_crawl_package_needs_no_torch_dgl_or_ray():
    heavy = ("torch", "dgl", "ray", "graviti_dist._dgl", "graviti_dist.graph")
    offenders = [m for m, names in _modules() if m.startswith("crawl/") and any(n.split(".")[0] in heavy or n in heavy for n in names)]
    assert offenders == []


def test_model_imports_only_torch_and_itself():
    # os: only to read GRAVITI_KERNELS, the per-device kernel override
    allowed = ("torch", "math", "dataclasses", "typing", "__future__", "graviti_dist.model", "collections", "abc", "warnings", "os")
    offenders = [
        (m, n) for m, names in _modules() if m.startswith("model/") for n in names if not n.startswith(allowed)
    ]
    assert offenders == []


def test_only_runtime_modules_import_ray():
    runtime = ("partition", "train", "infer", "serve", "generate", "bench", "ray_cluster", "demo")
    offenders = [
        m for m, names in _modules()
        if any(n == "ray" or n.startswith("ray.") for n in names) and not any(r in m for r in runtime)
    ]
    assert offenders == []


def test_ray_worker_entry_modules_stay_light():
    # Ray workers import these before any task runs; torch or DGL at their top level would cost every
    # worker 2.5 s of CPU (imports inside functions run only when that function needs them).
    light = ("worker_setup.py", "partition_read.py", "ray_cluster.py", "runtime_env.py")
    heavy = ("torch", "dgl", "graviti_dist._dgl", "graviti_dist.graph", "graviti_dist.partition")
    offenders = [(m, n) for m in light for n in _imports(PACKAGE / m, top_level_only=True) if n in heavy or n.split(".")[0] in heavy]
    assert offenders == []
