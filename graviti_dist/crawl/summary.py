"""The summary ``graviti inspect`` prints: counts, widths, coverage, degrees."""

from __future__ import annotations

import numpy as np

from graviti_dist.crawl.tables import Crawl


def _degree_stats(degrees: np.ndarray) -> dict:
    if degrees.size == 0:
        return {"mean": 0.0, "median": 0.0, "p99": 0.0, "max": 0}
    return {
        "mean": round(float(degrees.mean()), 3),
        "median": float(np.median(degrees)),
        "p99": float(np.percentile(degrees, 99)),
        "max": int(degrees.max()),
    }


def summarize(crawl: Crawl) -> dict:
    """A JSON-ready summary of a loaded crawl."""
    schema = crawl.schema
    nodes = {}
    for node_type, table in crawl.nodes.items():
        nodes[node_type] = {
            "count": len(table),
            "features": {
                name: {"kind": f.kind, "width": f.width, "missing": f.missing}
                | ({"categories": len(f.categories)} if f.categories is not None else {})
                for name, f in table.features.items()
            },
        }
    relations = {}
    for name, table in crawl.edges.items():
        rel = schema.relations[name]
        out_deg = np.bincount(table.src, minlength=crawl.num_nodes(rel.src))
        in_deg = np.bincount(table.dst, minlength=crawl.num_nodes(rel.dst))
        if rel.symmetric:
            out_deg = in_deg = out_deg + in_deg
        relations[name] = {
            "src": rel.src,
            "dst": rel.dst,
            "symmetric": rel.symmetric,
            "count": len(table),
            "self_loops": table.self_loops,
            "duplicates": table.duplicates,
            "attributes": list(rel.attributes),
            "out_degree": _degree_stats(out_deg),
            "in_degree": _degree_stats(in_deg),
        }
    tasks = {}
    for task in schema.tasks:
        if task.is_link:
            tasks[task.name] = {"type": "link", "relation": task.relation, "positives": len(crawl.edges[task.relation])}
            continue
        labels = crawl.labels[task.name]
        entry = {
            "type": task.type,
            "node_type": task.node_type,
            "labelled": int(labels.mask.sum()),
            "coverage": round(labels.coverage, 4),
        }
        known = labels.values[labels.mask]
        if task.type == "multiclass":
            entry["classes"] = {str(c): int(n) for c, n in zip(labels.classes, np.bincount(known, minlength=len(labels.classes)))}
        elif task.type == "binary":
            entry["positive_rate"] = round(float(known.mean()), 4) if known.size else None
        elif task.type == "regression":
            entry["mean"] = round(float(known.mean()), 4) if known.size else None
            entry["std"] = round(float(known.std()), 4) if known.size else None
            entry["transform"] = task.transform
        tasks[task.name] = entry
    report = crawl.report
    dropped = {
        "duplicate_nodes": report.dropped_duplicate_nodes,
        "dangling_edges": report.dropped_dangling_edges,
        "self_loops": report.dropped_self_loops,
        "duplicate_edges": report.dropped_duplicate_edges,
    }
    return {"name": schema.name, "node_types": nodes, "relations": relations, "tasks": tasks,
            "dropped": {k: v for k, v in dropped.items() if v}}


def format_summary(summary: dict) -> str:
    """Human-readable text of :func:`summarize`'s output."""
    lines = [f"crawl {summary['name']!r}", "", "node types:"]
    for name, info in summary["node_types"].items():
        widths = ", ".join(f"{f}: {v['kind']}" + (f"({v['categories']} values)" if "categories" in v else f"[{v['width']}]")
                           + (f" ({v['missing']:,} missing)" if v["missing"] else "")
                           for f, v in info["features"].items()) or "no features"
        lines.append(f"  {name:<12} {info['count']:>12,} nodes   features: {widths}")
    lines += ["", "relations:"]
    for name, info in summary["relations"].items():
        kind = "undirected" if info["symmetric"] else "directed"
        lines.append(f"  {name:<12} {info['count']:>12,} {kind} edges  {info['src']} -> {info['dst']}"
                     f"  self-loops {info['self_loops']:,}  duplicates {info['duplicates']:,}")
        for side in ("out_degree", "in_degree"):
            d = info[side]
            lines.append(f"  {'':<12} {side.replace('_', '-'):>10}: mean {d['mean']:.2f}  median {d['median']:.0f}"
                         f"  p99 {d['p99']:.0f}  max {d['max']:,}")
    lines += ["", f"tasks ({len(summary['tasks'])}):"]
    for name, info in summary["tasks"].items():
        if info["type"] == "link":
            lines.append(f"  {name:<12} link        on {info['relation']}: {info['positives']:,} positive edges")
            continue
        detail = ""
        if "classes" in info:
            detail = "classes " + ", ".join(f"{c}: {n:,}" for c, n in info["classes"].items())
        elif "positive_rate" in info and info["positive_rate"] is not None:
            detail = f"positive rate {info['positive_rate']:.1%}"
        elif "mean" in info and info["mean"] is not None:
            detail = f"mean {info['mean']:.3g}, std {info['std']:.3g}" + (" (after log1p)" if info["transform"] == "log1p" else "")
        lines.append(f"  {name:<12} {info['type']:<11} {info['labelled']:>10,} labelled {info['node_type']}s"
                     f" ({info['coverage']:.1%})  {detail}")
    if summary["dropped"]:
        lines += ["", "dropped while loading:"]
        for what, per in summary["dropped"].items():
            lines.append(f"  {what}: " + ", ".join(f"{k} {v:,}" for k, v in per.items()))
    return "\n".join(lines)
