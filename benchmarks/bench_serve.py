"""Load test of `graviti serve` on loopback: single-id latency (p50/p99), 64-id batch throughput, and
a mixed load (8 clients sending single ids, 50-id and 1024-id batches) with errors and the service's memory.

The service runs as its own process (`graviti serve`), the clients here, both on this machine,
over HTTP keep-alive. Bounded in requests and in seconds.
Setup (cached under --workdir): Twitch ENGB+PTBR from the datasets folder, 2 partitions,
a 2-epoch `graviti train` run with the default model.
Usage: python -m benchmarks.bench_serve [--single 2000] [--batches 300] [--clients 1,4] [--seconds 60]
       [--mixed-clients 8] [--mixed-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import requests

from benchmarks._meta import DEFAULT_DATASETS, write_result
from graviti_dist.partition import PartitionSet
from graviti_dist.train import RunDir



def prepare(workdir: Path, datasets: Path) -> tuple[Path, Path]:
    from graviti_dist.crawl.importers import import_twitch
    from graviti_dist.partition import PartitionSpec, partition_crawl

    workdir.mkdir(parents=True, exist_ok=True)
    crawl, parts, run = workdir / "twitch-crawl", workdir / "twitch-2parts", workdir / "twitch-run"
    if not (crawl / "graph.yaml").exists():
        import_twitch([datasets / "twitch" / "ENGB", datasets / "twitch" / "PTBR"], crawl, overwrite=True)
    if not PartitionSet(parts).is_finished():
        partition_crawl(crawl, parts, PartitionSpec(num_parts=2, executor="local"), overwrite=True)
    if not RunDir(run).best_model_path.exists():
        subprocess.run([sys.executable, "-m", "graviti_dist.train", "--set", f"partitions={parts}", "--set", f"out={run}",
                        "--set", "num_workers=1", "--set", "epochs=2", "--overwrite"], check=True)
    return run, parts


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(run: Path, parts: Path, port: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "graviti_dist.cli", "serve", str(run), "--partitions", str(parts),
                             "--port", str(port)], env=env)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return proc
        except requests.RequestException:  # refused before the bind, unanswered while it loads
            time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit("graviti serve exited during start-up")
    proc.kill()
    raise SystemExit("graviti serve did not answer /health within 180 s")


def _client_run(url: str, bodies: list[dict], deadline: float) -> list[float]:
    session = requests.Session()
    latencies = []
    for body in bodies:
        if time.time() > deadline:
            break
        start = time.perf_counter()
        response = session.post(url, json=body, timeout=30)
        latencies.append(time.perf_counter() - start)
        response.raise_for_status()
    return latencies


def load(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    """Send ``bodies`` from ``clients`` keep-alive clients; latency percentiles and request throughput."""
    _client_run(url, bodies[:20], time.time() + 30)  # warm-up
    shares = [bodies[i::clients] for i in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda share: _client_run(url, share, time.time() + seconds), shares))
    elapsed = time.perf_counter() - start
    latencies = sorted(x for r in results for x in r)

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3, 2)

    return {"clients": clients, "requests": len(latencies), "seconds": round(elapsed, 2),
            "requests_per_s": round(len(latencies) / elapsed, 1), "p50_ms": pct(0.5), "p90_ms": pct(0.9),
            "p99_ms": pct(0.99), "max_ms": round(latencies[-1] * 1e3, 2), "mean_ms": round(statistics.mean(latencies) * 1e3, 2)}


MIXED = ((1, 0.7), (50, 0.2), (1024, 0.1))  # (ids per request, share of requests)


def _mixed_client(url: str, ids: list[str], seed: int, deadline: float) -> list[tuple[int, float, int]]:
    """One client (its own process): MIXED-sized requests back to back until ``deadline``; each
    latency runs from sending the already-encoded body to the whole answer."""
    rng, session, out = random.Random(seed), requests.Session(), []
    sizes, weights = zip(*MIXED)
    headers = {"Content-Type": "application/json"}
    while time.time() < deadline:
        size = rng.choices(sizes, weights)[0]
        body = json.dumps({"ids": rng.sample(ids, size)})
        start = time.perf_counter()
        try:
            status = session.post(url, data=body, headers=headers, timeout=30).status_code
        except requests.RequestException:
            status = 0
        out.append((size, time.perf_counter() - start, status))
    return out


def mixed_load(url: str, ids: list[str], clients: int, seconds: float, service_pid: int) -> dict:
    """``clients`` keep-alive clients, each in its own process (as separate callers are: in one
    process their threads would wait on each other's GIL and count it as service latency), each
    sending MIXED-sized requests back to back for ``seconds``; per size latency percentiles, error
    count, and the service's RSS sampled every 0.5 s."""
    import multiprocessing

    import psutil

    service, rss = psutil.Process(service_pid), []
    with ProcessPoolExecutor(clients, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(time.sleep, [0.1] * clients))  # start every client process before the clock runs
        deadline = time.time() + seconds
        futures = [pool.submit(_mixed_client, url, ids, seed, deadline) for seed in range(clients)]
        while time.time() < deadline:
            rss.append(service.memory_info().rss / 2**20)
            time.sleep(0.5)
        samples = [x for f in futures for x in f.result()]
    rows = []
    for size, _ in MIXED:
        latencies = sorted(t for n, t, status in samples if n == size and status == 200)
        pct = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3, 2) if latencies else None  # noqa: E731
        rows.append({"ids": size, "requests": len(latencies), "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99),
                     "max_ms": pct(1.0)})
    quarter = max(1, len(rss) // 4)
    return {"clients": clients, "seconds": seconds, "sizes": rows,
            "errors": sum(1 for _, _, status in samples if status != 200),
            "statuses": sorted({status for _, _, status in samples}),
            "rss_mb": {"first_quarter_max": round(max(rss[:quarter]), 1), "last_quarter_max": round(max(rss[-quarter:]), 1),
                       "max": round(max(rss), 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=2000, help="single-id requests")
    parser.add_argument("--batches", type=int, default=300, help="64-id requests")
    parser.add_argument("--clients", default="1,4", help="concurrent keep-alive clients to try")
    parser.add_argument("--seconds", type=float, default=60, help="time bound per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the service")
    parser.add_argument("--mixed-clients", type=int, default=8, help="clients of the mixed load")
    parser.add_argument("--mixed-seconds", type=float, default=60, help="length of the mixed load")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/graviti-bench"))
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get("GRAVITI_DATASETS", DEFAULT_DATASETS)))
    args = parser.parse_args()
    run, parts = prepare(args.workdir, args.datasets)
    ids = [str(i) for i in PartitionSet(parts).read_id_map("user", columns=["raw_id"])["raw_id"].to_pylist()]
    rng = random.Random(0)
    single = [{"ids": [rng.choice(ids)]} for _ in range(args.single)]
    batch = [{"ids": rng.sample(ids, 64)} for _ in range(args.batches)]
    port = _port()
    service = start_service(run, parts, port, args.threads)
    url = f"http://127.0.0.1:{port}/predict"
    try:
        runs = []
        for clients in (int(c) for c in args.clients.split(",")):
            for kind, bodies in (("single id", single), ("64 ids", batch)):
                row = {"request": kind, **load(url, bodies, clients, args.seconds)}
                row["ids_per_s"] = round(row["requests_per_s"] * len(bodies[0]["ids"]), 1)
                print(row, flush=True)
                runs.append(row)
        mixed = mixed_load(url, ids, args.mixed_clients, args.mixed_seconds, service.pid)
        print(mixed, flush=True)
    finally:
        service.terminate()
        service.wait(timeout=30)
    path = write_result("serve", {"benchmark": "serve", "graph": "twitch ENGB+PTBR (2 partitions)", "service_threads": args.threads,
                                  "model": "graviti train defaults (2-layer GAT, 4x64), 2 epochs", "runs": runs,
                                  "mixed": mixed})
    plot(json.loads(path.read_text()), path.with_suffix(".png"))
    print(f"wrote {path}")


def plot(payload: dict, path: Path) -> None:
    """p50 and p99 latency per request kind and client count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = payload["runs"]
    labels = [f"{r['request']}\n{r['clients']} client{'s' if r['clients'] > 1 else ''}" for r in runs]
    x = range(len(runs))
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.bar([i - 0.2 for i in x], [r["p50_ms"] for r in runs], width=0.4, label="p50")
    ax.bar([i + 0.2 for i in x], [r["p99_ms"] for r in runs], width=0.4, label="p99")
    ax.axhline(50, color="grey", linestyle="--", linewidth=1, label="50 ms target (single id)")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set(ylabel="latency (ms)", title="graviti serve on loopback, Twitch ENGB+PTBR")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
