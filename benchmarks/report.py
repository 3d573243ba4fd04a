"""Render benchmarks/README.md's tables from the committed JSON results.

Usage: python -m benchmarks.report   (rewrites the blocks between <!-- NAME --> markers)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks._meta import RESULTS

README = Path(__file__).resolve().parent / "README.md"


def _env_line(result: dict) -> str:
    env = result["environment"]
    m, v = env["machine"], env["versions"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (f"Measured {env['date'][:10]} at commit `{env['commit'][:12]}` on {m['cpu']}, {m['cores']} cores, "
            f"{m['memory_gb']} GB{gpu}; torch {v['torch']}, DGL {v['dgl']}, pyarrow {v['pyarrow']}.")


def generate_table(result: dict) -> str:
    rows = ["| target | users | edges | shard rows | time | edges/s | peak RSS | on disk |", "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        rows.append(f"| {r['target_edges']:,} | {r['users']:,} | {r['edges']:,} | {r['shard_rows']:,} | {r['seconds']:.1f} s "
                    f"| {r['edges_per_s'] / 1e6:.2f} M | {r['peak_rss_mb'] / 1024:.2f} GB | {r['disk_mb'] / 1024:.2f} GB |")
    return "\n".join(rows) + "\n\n" + _env_line(result)


def encoder_table(result: dict) -> str:
    rows = ["| system | ms / batch (median) | spread (min-max) | seeds/s | ours is faster by |", "|---|---|---|---|---|"]
    for name, r in result["results"].items():
        rows.append(f"| {name} | {r['ms_per_batch']:.1f} | {r['spread_ms'][0]:.1f}-{r['spread_ms'][1]:.1f} | "
                    f"{r['seeds_per_s']:,} | {r['speedup_of_ours']:.2f}x |")
    g = result["graph"]
    return ("\n".join(rows) + f"\n\nGraph: {g['nodes']:,} nodes, {g['edges']:,} edges (synthetic, {g['users']:,} users); "
            f"{result['sampled_edges_per_batch']:,} sampled edges per batch; device {result['device']}, "
            f"{result['threads']} threads.\n" + _env_line(result))


def partition_table(result: dict) -> str:
    rows = ["| edges | parts | graviti (default) | graviti (default, k-way) | graviti (--executor ray) | DGL partition_graph "
            "| DGL / ours: default, k-way, Ray | default stages (read, split, assign, halo, write) "
            "| peak GB default | peak GB Ray (all processes, PSS) | peak GB DGL | edge cut (ours, DGL) | node balance (ours, DGL) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def ratio(run: dict | None) -> str:
        if run is None:
            return "-"
        versus = run["vs_dgl"]
        text = f"{versus['median']:.2f}x"
        return text + (f" ({versus['range'][0]:.2f}-{versus['range'][1]:.2f})" if versus["rounds"] > 1 else "")

    rounds, executors = set(), set()
    for r in result["runs"]:
        o, d, ray, kway = r["ours"], r["dgl"], r["ours_ray"], r.get("ours_kway")
        rounds.add(o["vs_dgl"]["rounds"])
        executors.add(o["executor"])
        stages = ", ".join(f"{v:.1f}" for v in o["stages"].values())
        kway_s = f"{kway['seconds']:.1f} s" if kway else "-"
        rows.append(f"| {r['target_edges']:,} | {r['parts']} | {o['seconds']:.1f} s | {kway_s} | {ray['seconds']:.1f} s "
                    f"| {d['seconds']:.1f} s | {ratio(o)}, {ratio(kway)}, {r['speedup_ray']:.2f}x | {stages} s "
                    f"| {o['peak_gb']:.2f} | {ray['peak_gb']:.2f} | {d['peak_gb']:.2f} "
                    f"| {o['edge_cut']:.1%}, {d['edge_cut']:.1%} | {o['node_balance']:.3f}, {d['node_balance']:.3f} |")
    note = (f"The default command ran with executor {', '.join(sorted(executors))} (`--executor auto`: no cluster given). ")
    if max(rounds) > 1:
        note += ("Where a ratio has a range, the default runs and DGL ran in interleaved rounds: times are each system's "
                 "median run, peaks its median peak, the ratio the median of per-round ratios (range). Other cells are "
                 "single runs.")
    return "\n".join(rows) + "\n\n" + note + "\n\n" + _env_line(result)


def serve_table(result: dict) -> str:
    rows = ["| request | clients | requests | p50 | p90 | p99 | max | requests/s | ids/s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        rows.append(f"| {r['request']} | {r['clients']} | {r['requests']:,} | {r['p50_ms']:.1f} ms | {r['p90_ms']:.1f} ms "
                    f"| {r['p99_ms']:.1f} ms | {r['max_ms']:.1f} ms | {r['requests_per_s']:,.0f} | {r['ids_per_s']:,.0f} |")
    table = "\n".join(rows) + "\n"
    mixed = result.get("mixed")
    if mixed:
        table += (f"\nMixed load: {mixed['clients']} clients for {mixed['seconds']:.0f} s, each sending 1, 50 or 1024 ids "
                  f"(70/20/10%) back to back, each client its own process; {mixed['errors']} errors; service RSS max {mixed['rss_mb']['first_quarter_max']:,.0f} MB "
                  f"in the first quarter, {mixed['rss_mb']['last_quarter_max']:,.0f} MB in the last.\n\n"
                  "| ids per request | requests | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n")
        table += "".join(f"| {r['ids']:,} | {r['requests']:,} | {r['p50_ms']:.1f} ms | {r['p90_ms']:.1f} ms | {r['p99_ms']:.1f} ms "
                         f"| {r['max_ms']:.1f} ms |\n" for r in mixed["sizes"])
    return table + f"\nGraph: {result['graph']}; model: {result['model']}; service threads: {result['service_threads']}.\n" + _env_line(result)


def metis_table(result: dict) -> str:
    rows = ["| crawl edges | homogeneous nodes | homogeneous edges | graph RSS | peak RSS with METIS | METIS time |",
            "|---|---|---|---|---|---|"]
    for r in result["runs"]:
        rows.append(f"| {r['target_edges']:,} | {r['nodes']:,} | {r['edges']:,} | {r['graph_rss_gb']:.2f} GB "
                    f"| {r['peak_rss_gb']:.2f} GB | {r['metis_seconds']:.1f} s |")
    fits = ", ".join(f"{mem}: {n / 1e6:,.0f}M" for mem, n in result["max_homogeneous_edges_at_80pct_memory"].items())
    return ("\n".join(rows) + f"\n\nPeak grows {result['peak_gb_per_million_edges'] * 1000:.0f} MB per million homogeneous "
            f"edges ({result['parts']} parts). Largest homogeneous graph whose METIS step fits in 80% of memory: {fits} edges.\n"
            + _env_line(result))


RENDERERS = {"generate": ("generate.json", generate_table), "encoder-cpu": ("encoder-cpu.json", encoder_table),
             "encoder-cpu-tcmalloc": ("encoder-cpu-tcmalloc.json", encoder_table),
             "partition": ("partition.json", partition_table), "encoder-cuda": ("encoder-cuda.json", encoder_table),
             "serve": ("serve.json", serve_table), "metis-memory": ("metis-memory.json", metis_table)}


def _train_renderer(filename: str):
    def render(result: dict) -> str:
        return (RESULTS / filename.replace(".json", ".md")).read_text().strip()

    return filename, render


for _name in ("train-cpu-synthetic-1m", "train-cpu-synthetic-60k-users", "train-cpu-synthetic-1m-tcmalloc", "train-cuda-synthetic-1m", "quality-twitch",
              "quality-multitask", "quality-edge-inputs", "remote", "distgraph"):
    RENDERERS[_name] = _train_renderer(_name + ".json")


def main() -> None:
    text = README.read_text()
    for marker, (filename, render) in RENDERERS.items():
        path = RESULTS / filename
        if not path.exists():
            continue
        block = render(json.loads(path.read_text()))
        text = re.sub(rf"(<!-- {marker} -->\n).*?(<!-- /{marker} -->)", lambda m: m.group(1) + block + "\n" + m.group(2),
                      text, flags=re.S)
    README.write_text(text)


if __name__ == "__main__":
    main()
