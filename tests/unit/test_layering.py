"""Holds the rules of ARCHITECTURE.md by parsing the package's imports and string constants."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "graviti_dist"
STAGES = ("runtime", "crawl", "partition", "sampling", "model", "train", "infer")
# What each folder may import from the package, besides itself: the flow's direction
# (crawl <- partition <- sampling <- train <- infer; model <- sampling, train, infer; runtime <- everyone).
ALLOWED = {
    "runtime": {"errors"},
    "crawl": {"errors", "runtime"},
    "partition": {"errors", "runtime", "_dgl", "crawl"},
    "model": set(),
    "sampling": {"errors", "runtime", "_dgl", "partition", "model"},
    "train": {"errors", "runtime", "_dgl", "partition", "sampling", "model"},
    "infer": {"errors", "runtime", "_dgl", "partition", "sampling", "model", "train"},
}
HEAVY = ("torch", "dgl", "ray")


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules ``path`` imports (``from P import n`` counts as P, and as P.n when that is a module of
    ours); a lazy face's exported modules count as imports of the face."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_face":
            names.update(f"{_name(path)}.{v.value}" for v in node.args[1].values)
    return names


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _ours(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith("graviti_dist.")}


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _strings(path: Path) -> set[str]:
    """String constants of ``path``'s code (f-string pieces included), docstrings and comments left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings}


def test_root_holds_only_the_entry_points_and_the_dgl_door():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root == ["__init__.py", "_dgl.py", "cli.py", "demo.py", "errors.py"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(STAGES)


def test_only_the_entry_point_imports_dgl():
    offenders = [m for m, p in MODULES.items() if m != "graviti_dist._dgl"
                 and any(n == "dgl" or n.startswith("dgl.") for n in _imports(p))]
    assert offenders == []


def test_stages_import_only_what_comes_before_them():
    offenders = []
    for module, path in MODULES.items():
        folder = _folder(module)
        if folder not in ALLOWED or module.endswith("__main__"):  # an entry point, as cli.py is
            continue
        for name in _ours(_imports(path)):
            other = _folder(name)
            if other != folder and other not in ALLOWED[folder]:
                offenders.append((module, name))
    assert offenders == []


def test_other_stages_use_a_stage_through_its_face():
    # runtime is a toolbox of light modules, imported by module; every other stage by its __init__.
    offenders = []
    for module, path in MODULES.items():
        for name in _ours(_imports(path)):
            other = _folder(name)
            if other in STAGES and other != "runtime" and other != _folder(module) and name != f"graviti_dist.{other}" \
                    and not (name.startswith("graviti_dist.crawl.importers") and module == "graviti_dist.cli"):
                offenders.append((module, name))
    assert offenders == []


def test_crawl_and_model_stay_free_of_heavy_dependencies():
    crawl = [(m, n) for m, p in MODULES.items() if _folder(m) == "crawl" for n in _imports(p) if n.split(".")[0] in HEAVY]
    assert crawl == []
    # os: only to read GRAVITI_KERNELS, the per-device kernel override
    allowed = ("torch", "math", "dataclasses", "typing", "__future__", "graviti_dist.model", "collections", "abc", "warnings", "os")
    model = [(m, n) for m, p in MODULES.items() if _folder(m) == "model" for n in _imports(p) if not n.startswith(allowed)]
    assert model == []


def test_only_the_modules_that_start_or_use_ray_import_it():
    ray_users = {"graviti_dist.runtime.ray_cluster", "graviti_dist.partition.build", "graviti_dist.partition.read",
                 "graviti_dist.partition.write", "graviti_dist.train.trainer", "graviti_dist.train.rendezvous", "graviti_dist.train.tune",
                 "graviti_dist.infer.batch", "graviti_dist.demo",
                 "graviti_dist.sampling.ray_store"}
    importers = {m for m, p in MODULES.items() if any(n == "ray" or n.startswith("ray.") for n in _imports(p))}
    assert importers == ray_users


def test_no_import_circles():
    # Importing a module runs its packages' faces first (those of other packages: a module's own
    # package is already being imported); __main__ modules are entry points nobody imports.
    def edges(m: str, path: Path) -> set[str]:
        targets = {".".join(n.split(".")[:i]) for n in _ours(_imports(path)) if n in MODULES for i in range(2, n.count(".") + 2)}
        return {t for t in targets if t != m and not m.startswith(t + ".")}

    graph = {m: edges(m, p) for m, p in MODULES.items() if not m.endswith("__main__")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1  # on the current path
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [nxt])
                return True
            if nxt not in state and visit(nxt, stack + [nxt]):
                return True
        state[node] = 2  # done
        return False

    assert not any(visit(m, [m]) for m in sorted(graph) if state.get(m) is None), cycle


def test_ray_worker_entry_modules_stay_light():
    # Ray workers import these before any task runs; torch or DGL at their top level, directly or
    # through what they import, would cost every worker 2.5 s of CPU (imports inside functions run
    # only when that function needs them).
    entry = ["graviti_dist.runtime.worker_setup", "graviti_dist.runtime.ray_cluster", "graviti_dist.runtime.runtime_env",
             "graviti_dist.partition.read"]
    seen, todo, heavy = set(), list(entry), []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        names = _imports(MODULES[module], top_level_only=True) | {".".join(parts[:i]) for i in range(2, len(parts))}
        heavy += [(module, n) for n in names if n.split(".")[0] in HEAVY or n == "graviti_dist._dgl"]
        todo += [n for n in names if n in MODULES]
    assert heavy == []
    assert "graviti_dist.partition.build" not in seen and "graviti_dist.crawl.load" in seen  # the walk follows faces


def test_each_on_disk_name_is_spelled_by_its_owner_only():
    owners = {
        "graviti_dist.partition.layout": {"manifest.json", "report.json", "graph.json", "graph.dgl", "node_feat.dgl",
                                          "edge_feat.dgl", "halo_feat.dgl", "id_map", "link_splits"},
        "graviti_dist.train.run_dir": {"config.yaml", "metrics.jsonl", "best_model.pt", "state.pt", "test_metrics.json",
                                       "test_metrics.md", "losses.png", "metrics.png"},
        "graviti_dist.infer.predictions": {"inference.json"},
        "graviti_dist.crawl.schema": {"graph.yaml"},
    }
    # File names anywhere in a string; folder names (no dot) as a whole string only.
    offenders = [(m, s) for m, p in MODULES.items() for owner, names in owners.items() if m != owner
                 for s in _strings(p) if any(name in s if "." in name else name == s for name in names)]
    assert offenders == []


def test_the_rules_see_what_they_check():
    # A parser that found nothing would pass every rule above.
    assert len(MODULES) > 40 and "graviti_dist.partition.read" in MODULES
    assert "graviti_dist.partition.build" in _imports(MODULES["graviti_dist.partition"])  # lazy face edges
    assert "graviti_dist.crawl" in _imports(MODULES["graviti_dist.partition.read"])
    assert "partition.layout" not in {s for s in _strings(MODULES["graviti_dist.cli"])}
