"""The crawl schema: what ``graph.yaml`` declares, validated up front.

A crawl directory holds ``graph.yaml`` (this schema) plus Parquet shards under
``nodes/<node_type>/`` and ``edges/<relation>/``. The schema is the contract:
every column a feature, label or task names must exist with a compatible type,
and every cross-reference (relation endpoints, task targets) must resolve.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from graviti_dist.errors import GravitiError

SCHEMA_FILE = "graph.yaml"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")

FeatureKind = Literal["numeric", "vector", "categorical", "multihot"]
TaskType = Literal["multiclass", "binary", "multilabel", "regression", "link"]
EdgeAttribute = Literal["ts", "weight"]
NODE_TASK_TYPES = ("multiclass", "binary", "multilabel", "regression")


class _Strict(BaseModel):
    # Unknown keys are typos far more often than intent: refuse them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    """One input feature column of a node type."""

    name: str
    kind: FeatureKind
    width: int | None = Field(default=None, gt=0, description="vector/multihot width")
    num_categories: int | None = Field(
        default=None, gt=0, description="categorical: fixed vocabulary size; derived from data if absent"
    )

    @model_validator(mode="after")
    def _width_matches_kind(self) -> "Feature":
        if self.kind in ("vector", "multihot") and self.width is None:
            raise ValueError(f"feature {self.name!r} of kind {self.kind} needs a 'width'")
        if self.kind in ("numeric", "categorical") and self.width is not None:
            raise ValueError(f"feature {self.name!r} of kind {self.kind} takes no 'width'")
        return self

    @property
    def dense_width(self) -> int:
        """Columns this feature occupies in the dense input matrix (categoricals: 1 code column)."""
        return self.width if self.width is not None else 1


class NodeType(_Strict):
    """A node type: its feature columns and its label columns."""

    features: list[Feature] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)


class Relation(_Strict):
    """An edge type between two node types."""

    src: str
    dst: str
    symmetric: bool = Field(default=False, description="each row is one undirected edge")
    attributes: list[EdgeAttribute] = Field(default_factory=list)
    self_loops: Literal["keep", "drop"] = "keep"
    duplicates: Literal["keep", "drop"] = "keep"

    @model_validator(mode="after")
    def _symmetric_needs_same_type(self) -> "Relation":
        if self.symmetric and self.src != self.dst:
            raise ValueError(f"a symmetric relation must join one node type to itself, not {self.src!r} to {self.dst!r}")
        return self


class Task(_Strict):
    """A learning task: a label column of a node type, or a relation for link prediction."""

    name: str
    type: TaskType
    node_type: str | None = None
    label: str | None = None
    relation: str | None = None
    num_classes: int | None = Field(default=None, ge=2, description="multiclass: derived from data if absent")
    width: int | None = Field(default=None, gt=0, description="multilabel: number of labels")
    transform: Literal["none", "log1p"] = Field(default="none", description="regression target transform")

    @property
    def is_link(self) -> bool:
        return self.type == "link"

    @model_validator(mode="after")
    def _target_matches_type(self) -> "Task":
        if self.is_link:
            if self.relation is None or self.node_type is not None or self.label is not None:
                raise ValueError(f"link task {self.name!r} takes a 'relation' and no 'node_type'/'label'")
        else:
            if self.node_type is None or self.label is None or self.relation is not None:
                raise ValueError(f"{self.type} task {self.name!r} takes a 'node_type' and a 'label', no 'relation'")
        if self.type == "multilabel" and self.width is None:
            raise ValueError(f"multilabel task {self.name!r} needs a 'width'")
        if self.transform != "none" and self.type != "regression":
            raise ValueError(f"task {self.name!r}: 'transform' applies to regression tasks only")
        return self


class CrawlSchema(_Strict):
    """The whole ``graph.yaml``."""

    name: str = "crawl"
    node_types: dict[str, NodeType]
    relations: dict[str, Relation] = Field(default_factory=dict)
    tasks: list[Task] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references_resolve(self) -> "CrawlSchema":
        if not self.node_types:
            raise ValueError("declare at least one node type under 'node_types'")
        for kind, names in (("node type", self.node_types), ("relation", self.relations)):
            for name in names:
                if not _NAME.match(name):
                    raise ValueError(f"{kind} name {name!r} must be letters, digits, '_' or '-' (it names a folder)")
        for rel_name, rel in self.relations.items():
            for end in (rel.src, rel.dst):
                if end not in self.node_types:
                    raise ValueError(f"relation {rel_name!r} refers to unknown node type {end!r}")
        for ntype, spec in self.node_types.items():
            columns = [f.name for f in spec.features] + spec.labels
            dup = sorted({c for c in columns if columns.count(c) > 1})
            if dup:
                raise ValueError(f"node type {ntype!r} declares column(s) {dup} more than once")
            if "id" in columns:
                raise ValueError(f"node type {ntype!r}: 'id' is the id column and cannot be a feature or label")
        seen: set[str] = set()
        for task in self.tasks:
            if not _NAME.match(task.name):  # link splits and recommendations are files named after tasks
                raise ValueError(f"task name {task.name!r} must be letters, digits, '_' or '-' (it names files)")
            if task.name in seen:
                raise ValueError(f"task name {task.name!r} is used twice")
            seen.add(task.name)
            if task.is_link:
                if task.relation not in self.relations:
                    raise ValueError(f"link task {task.name!r} refers to unknown relation {task.relation!r}")
            elif task.node_type not in self.node_types:
                raise ValueError(f"task {task.name!r} refers to unknown node type {task.node_type!r}")
            elif task.label not in self.node_types[task.node_type].labels:
                raise ValueError(
                    f"task {task.name!r}: label {task.label!r} is not among the labels of node type "
                    f"{task.node_type!r} {self.node_types[task.node_type].labels}"
                )
        return self

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


def parse_schema(text: str, source: str = SCHEMA_FILE) -> CrawlSchema:
    """Parse ``graph.yaml`` text; raises GravitiError naming ``source`` and the bad field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GravitiError(f"{source}: not valid YAML: {exc}") from None
    return schema_from_dict(raw, source)


def schema_from_dict(raw: object, source: str) -> CrawlSchema:
    """Validate a schema mapping; raises GravitiError listing each bad field."""
    if not isinstance(raw, dict):
        raise GravitiError(f"{source}: expected a mapping with 'node_types', 'relations' and 'tasks'")
    try:
        return CrawlSchema.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"  {where}: {err['msg']}")
        raise GravitiError(f"{source}: invalid crawl schema:\n" + "\n".join(problems)) from None


def load_schema(crawl_dir: str | Path) -> CrawlSchema:
    """Read and validate ``CRAWL/graph.yaml``."""
    path = Path(crawl_dir) / SCHEMA_FILE
    if not Path(crawl_dir).is_dir():
        raise GravitiError(f"{crawl_dir}: no such crawl directory")
    if not path.is_file():
        raise GravitiError(f"{path}: missing; a crawl directory must hold graph.yaml (see README, 'The crawl format')")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise GravitiError(f"{path}: not UTF-8 text (byte {raw[exc.start]:#04x} at line {line}); save it as UTF-8") from None
    return parse_schema(text, source=str(path))
