"""The partition set on disk: every file name, and the typed manifest.

A set is a directory::

    manifest.json                 # written last: its presence marks a finished set (Manifest below)
    report.json                   # what the partitioner measured (sizes, balance, stage times)
    graph.json                    # DGL's partition config: dgl.distributed.load_partition(graph.json, i)
    part<i>/graph.dgl             # DGL's files per part: the local graph with its halo,
    part<i>/node_feat.dgl         #   inner nodes' data, inner edges' data
    part<i>/edge_feat.dgl
    part<i>/halo_feat.dgl         # halo nodes' data (DGL leaves it to its KVStore), with their local ids
    id_map/<node type>.parquet    # shuffled_id, type_id, raw_id, part
    link_splits/<task>.parquet    # src, dst (type ids), split of every edge of a link task's relation

This module is the only one that spells these names; everyone else asks :class:`PartitionSet`.
It needs pyarrow and pydantic only (no torch or DGL), so any process can read a manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from graviti_dist.crawl import CrawlSchema, Relation
from graviti_dist.errors import FieldError, GravitiError

# 2: the manifest records every file's size and SHA-256 (``files``); sets of format 1 still load,
# unchecked. Readers refuse a set of a later format than they know.
FORMAT_VERSION = 2
_REPARTITION = "re-partition the crawl (graviti partition CRAWL --out SET --overwrite)"
MANIFEST = "manifest.json"
REPORT = "report.json"
GRAPH_NAME = "graph"
PART_CONFIG = f"{GRAPH_NAME}.json"
PART_GRAPH = "graph.dgl"
NODE_FEATS = "node_feat.dgl"
EDGE_FEATS = "edge_feat.dgl"
HALO_FEATS = "halo_feat.dgl"
ID_MAP_DIR = "id_map"
LINK_SPLITS_DIR = "link_splits"
# node-data key of each node's structural inputs (log1p in-degree per relation) in node_feat.dgl
# and halo_feat.dgl, beside the crawl's feat_* columns
DEGREE = "degree"
# edge-data key, in each part's graph.dgl, of every local edge's inputs (inner and halo edges alike:
# DGL's edge_feat.dgl holds inner edges only, and sampling past the first hop reaches halo edges)
EDGE_INPUTS = "edge_inputs"
EXECUTORS = ("auto", "ray", "local")


@dataclass(frozen=True)
class PartitionSpec:
    """How to partition; validated on construction (errors name the field)."""

    num_parts: int
    method: str = "metis"
    num_hops: int = 2  # halo depth: the number of GAT layers to sample exactly inside a partition
    balance_train: bool = True
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_by: str = "node"  # node: one split per node for all its tasks; task: each task splits its own nodes
    seed: int = 0
    num_actors: int | None = None
    executor: str = "auto"  # "ray" (actors, local Ray or a cluster), "local" (this process, threads) or "auto"
    metis_mode: str = "recursive"  # "recursive" bisection (reproducible) or "k-way" (METIS's multilevel k-way)

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise FieldError("executor", f"must be one of {', '.join(EXECUTORS)}, not {self.executor!r}")
        if self.num_parts < 1:
            raise FieldError("num_parts", f"must be at least 1, got {self.num_parts}")
        if self.metis_mode not in ("recursive", "k-way"):
            raise FieldError("metis_mode", f"must be recursive or k-way, not {self.metis_mode!r}")
        if self.split_by not in ("node", "task"):
            raise FieldError("split_by", f"must be node or task, not {self.split_by!r}")
        if self.method not in ("metis", "random"):
            raise FieldError("method", f"must be metis or random, not {self.method!r}")
        if self.num_hops < 1:
            raise FieldError("num_hops", f"must be at least 1, got {self.num_hops}")
        if self.num_actors is not None and self.num_actors < 1:
            raise FieldError("num_actors", f"must be at least 1, got {self.num_actors}")
        object.__setattr__(self, "split", check_fractions(tuple(self.split)))


def check_fractions(fractions: tuple[float, ...]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6 or fractions[0] <= 0:
        raise FieldError("split", f"fractions must be three non-negative numbers summing to 1 with train > 0, got {fractions}")
    return tuple(float(f) for f in fractions)


class _Record(BaseModel):
    # Readers ignore keys they do not know: a set written by a newer minor version still loads.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class FeatureInfo(_Record):
    kind: str
    width: int
    categories: int | None = None  # categorical: codes including the one for a missing value
    # numeric/vector: per-column mean and standard deviation over every node of the type, so that
    # every worker (and every row fetched from another partition) is standardised alike; absent in
    # sets written before they were recorded (then each partition standardises with its own rows)
    mean: list[float] | None = None
    std: list[float] | None = None


class StructuralInfo(_Record):
    """A node type's structural input columns (``DEGREE``): log1p of its in-degree per relation in
    the message-passing graph, with mean and standard deviation over every node of the type, so
    that each partition (and each row fetched from another one) is scaled alike."""

    columns: list[str]  # the relation (canonical edge type, "src:rel:dst") each column counts
    mean: list[float]
    std: list[float]


class EdgeInputInfo(_Record):
    """The edge input columns (``EDGE_INPUTS``): ``age`` is log1p(latest_ts - ts), from the crawl's
    latest ``ts``; ``weight`` is sign(w) log1p(|w|). Each is standardised with its mean and standard
    deviation over the message-passing graph's edges that have it (validation and test link edges
    are not among them); an edge whose relation lacks the attribute reads 0, the mean."""

    columns: list[str]
    mean: list[float]
    std: list[float]
    latest_ts: int | None = None

    @property
    def width(self) -> int:
        return len(self.columns)


class FileRecord(_Record):
    """A file of the set as the partitioner wrote it."""

    size: int
    sha256: str


def file_records(root: Path) -> dict[str, FileRecord]:
    """Size and SHA-256 of every file under ``root`` but the manifest (relative POSIX paths)."""
    records = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        records[path.relative_to(root).as_posix()] = FileRecord(size=path.stat().st_size, sha256=digest)
    return records


class TaskInfo(_Record):
    """A task as the partitioner recorded it: the schema's task plus its training statistics."""

    name: str
    type: str
    node_type: str | None = None
    label: str | None = None
    relation: str | None = None
    num_classes: int | None = None
    width: int | None = None
    transform: str = "none"
    classes: list[str] | None = None  # multiclass: class names in code order
    counts: dict[str, int] | None = None  # node tasks: labelled nodes per split
    train_mean: float | None = None  # regression: the (transformed) target's training mean and std
    train_std: float | None = None
    train_positive_rate: float | None = None  # binary, multilabel

    @property
    def is_link(self) -> bool:
        return self.type == "link"


class PartStats(_Record):
    part: int
    inner_nodes: dict[str, int]
    halo_nodes: dict[str, int]
    train_nodes: dict[str, int]
    inner_edges: int
    local_edges: int
    peak_rss_gb: float


class Manifest(_Record):
    """What a finished set holds; written last by the partitioner."""

    format_version: int
    graph_name: str = GRAPH_NAME
    part_config: str = PART_CONFIG
    crawl: str
    crawl_schema: CrawlSchema = Field(alias="schema")
    spec: PartitionSpec
    ntypes: list[str]
    etypes: list[tuple[str, str, str]]
    features: dict[str, dict[str, FeatureInfo]]
    structural: dict[str, StructuralInfo] = Field(default_factory=dict)  # node type -> its DEGREE columns; empty in older sets
    edge_inputs: EdgeInputInfo | None = None  # None: no relation has ts or weight, or an older set
    tasks: list[TaskInfo]
    edge_attributes: dict[str, list[str]]
    parts: list[PartStats]
    files: dict[str, FileRecord] = Field(default_factory=dict)  # empty in format 1 sets

    @field_validator("spec", mode="before")
    @classmethod
    def _split_by_of_older_sets(cls, spec):
        # sets written before split_by existed split every task on its own
        if isinstance(spec, dict) and "split_by" not in spec:
            return {**spec, "split_by": "task"}
        return spec

    @property
    def num_parts(self) -> int:
        return self.spec.num_parts

    @property
    def num_hops(self) -> int:
        return self.spec.num_hops

    @property
    def node_tasks(self) -> list[TaskInfo]:
        return [t for t in self.tasks if not t.is_link]

    @property
    def link_tasks(self) -> list[TaskInfo]:
        return [t for t in self.tasks if t.is_link]

    def task(self, name: str) -> TaskInfo:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def relation(self, name: str) -> Relation:
        return self.crawl_schema.relations[name]

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


class PartitionSet:
    """Paths and typed readers of the set at ``root`` (finished or being built)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def report_path(self) -> Path:
        return self.root / REPORT

    @property
    def part_config(self) -> Path:
        return self.root / PART_CONFIG

    def is_finished(self) -> bool:
        return self.manifest_path.is_file()

    def part_dir(self, part_id: int) -> Path:
        return self.root / part_dir_name(part_id)

    def halo_feats(self, part_id: int) -> Path:
        return self.part_dir(part_id) / HALO_FEATS

    def node_feats(self, part_id: int) -> Path:
        return self.part_dir(part_id) / NODE_FEATS

    def edge_feats(self, part_id: int) -> Path:
        return self.part_dir(part_id) / EDGE_FEATS

    def part_graph(self, part_id: int) -> Path:
        return self.part_dir(part_id) / PART_GRAPH

    def id_map_path(self, node_type: str) -> Path:
        return self.root / ID_MAP_DIR / f"{node_type}.parquet"

    def link_split_path(self, task: str) -> Path:
        return self.root / LINK_SPLITS_DIR / f"{task}.parquet"

    def read_manifest(self) -> Manifest:
        """The set's manifest; a GravitiError naming the file when the set is unfinished or the manifest invalid."""
        if not self.is_finished():
            raise GravitiError(f"{self.root}: not a partition set, or not a finished partition set (no {MANIFEST}); "
                               "run graviti partition first")
        try:
            raw = json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GravitiError(f"{self.manifest_path}: not valid JSON ({exc}); {_REPARTITION}") from None
        version = raw.get("format_version") if isinstance(raw, dict) else None
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise GravitiError(f"{self.manifest_path}: a set of format {version}, written by a newer graviti-dist; "
                               f"this one reads formats up to {FORMAT_VERSION} (upgrade, or {_REPARTITION})")
        try:
            return Manifest.model_validate(raw)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
            raise GravitiError(f"{self.manifest_path}: not a valid manifest ({fields}); {_REPARTITION}") from None

    def read_part_config(self) -> dict:
        """DGL's partition config (``node_map``/``edge_map`` ranges of shuffled ids, per part and type)."""
        try:
            config = json.loads(self.part_config.read_text())
        except FileNotFoundError:
            raise GravitiError(f"{self.part_config}: missing; {_REPARTITION}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GravitiError(f"{self.part_config}: not valid JSON ({exc}); {_REPARTITION}") from None
        if not isinstance(config, dict) or "num_parts" not in config:
            raise GravitiError(f"{self.part_config}: not DGL's partition config (no num_parts); {_REPARTITION}")
        return config

    def verify_files(self, manifest: Manifest, part_ids: list[int] | None = None, checksums: bool = False) -> None:
        """Every file the manifest records (the shared ones and those of ``part_ids``; all when None)
        is there with its recorded size (and, with ``checksums``, content): a damaged file is named
        before DGL reads it (a truncated node_feat.dgl crashed every reader with a segfault)."""
        wanted = None if part_ids is None else {part_dir_name(p) for p in part_ids}
        for name, record in manifest.files.items():
            top = name.split("/", 1)[0]
            if wanted is not None and top.startswith("part") and top[4:].isdigit() and top not in wanted:
                continue
            path = self.root / name
            if not path.is_file():
                raise GravitiError(f"{path}: missing (the manifest records {record.size:,} bytes); {_REPARTITION}")
            size = path.stat().st_size
            if size != record.size:
                raise GravitiError(f"{path}: {size:,} bytes, the manifest records {record.size:,} (truncated or "
                                   f"replaced); {_REPARTITION}")
            if checksums:
                with path.open("rb") as f:
                    if hashlib.file_digest(f, "sha256").hexdigest() != record.sha256:
                        raise GravitiError(f"{path}: its content differs from the manifest's SHA-256 (damaged or "
                                           f"edited); {_REPARTITION}")

    def write_manifest(self, manifest: Manifest) -> None:
        self.manifest_path.write_text(manifest.to_json())

    def write_report(self, report: dict) -> None:
        self.report_path.write_text(json.dumps(report, indent=2))

    def read_id_map(self, node_type: str, columns: list[str] | None = None) -> pa.Table:
        """``shuffled_id``, ``type_id`` (crawl row), ``raw_id``, ``part`` of every node of ``node_type``, in type-id order."""
        return pq.read_table(self.id_map_path(node_type), columns=columns)

    def write_id_map(self, node_type: str, table: pa.Table) -> None:
        self.id_map_path(node_type).parent.mkdir(exist_ok=True)
        pq.write_table(table, self.id_map_path(node_type))

    def read_link_split(self, task: str) -> pa.Table:
        """``src``, ``dst`` (type ids) and ``split`` of every edge of link task ``task``'s relation, in crawl order."""
        return pq.read_table(self.link_split_path(task))

    def write_link_split(self, task: str, table: pa.Table) -> None:
        self.link_split_path(task).parent.mkdir(exist_ok=True)
        pq.write_table(table, self.link_split_path(task))


def part_dir_name(part_id: int) -> str:
    return f"part{part_id}"


def part_files(part_id: int) -> dict[str, str]:
    """One part's entry in DGL's partition config: its files relative to the set."""
    folder = part_dir_name(part_id)
    return {"node_feats": f"{folder}/{NODE_FEATS}", "edge_feats": f"{folder}/{EDGE_FEATS}", "part_graph": f"{folder}/{PART_GRAPH}"}


def read_manifest(root: str | Path) -> Manifest:
    """The manifest of the finished set at ``root``."""
    return PartitionSet(root).read_manifest()
