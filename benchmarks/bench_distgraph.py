"""DGL's DistGraph against our graph store on Ray, on the same 1-hop set: the measurement behind the
README's choice (issue #18 allowed either).

Both serve synthetic-1m's 2-part 1-hop set (``graviti partition --num-hops 1``: DGL's partition
format, which DistGraph loads as it is) to 2 trainers on this machine, one per partition, each with
one thread, as ``graviti train`` runs them. A trainer's step is what both systems do for it: sample
two hops (fanouts 10, 10) around 1,024 of its partition's training seeds and fetch every input
node's feature rows. Only the sampler and the feature fetch differ:

* **DistGraph**: one ``DistGraphServer`` per partition (DGL's socket RPC; DGL's launcher would start
  them), trainers as its clients with ``DistNodeDataLoader`` + ``NeighborSampler``, feature rows pulled
  from its KVStore (``g.nodes[type].data[column][ids]``, every input column);
* **ours**: one store actor per partition on Ray (``sampling/ray_store.py``), trainers in Ray actors
  with ``RemoteMinibatches`` (sample + features, rows standardised).

DGL assumes one partition per machine; on one host each server and client is made to behave so
(``_one_machine_per_partition``): as on a cluster, a trainer reads its own partition's feature rows
from its server's shared memory. The graph structure is not shared (two servers of one graph on one
host would share its name: ``disable_shared_mem``), so DistGraph samples even the trainer's own
partition through its server, where DistDGL on a cluster samples it in process. Rounds
alternate who goes first; seeds/s is per trainer, over steps after the first three.

Usage: python -m benchmarks.bench_distgraph [--workdir DIR] [--rounds 2] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._meta import RESULTS, write_result, write_whole

FANOUTS, BATCH = [10, 10], 1024
WARMUP = 3


def _seeds(set_dir: str, part_id: int):
    """Partition ``part_id``'s training seeds as shuffled ids (the seeds ``graviti train`` draws)."""
    from graviti_dist._dgl import dgl
    from graviti_dist.sampling import NodeMinibatches, load_worker_partition

    part = load_worker_partition(set_dir, part_id)
    return part.graph.ndata[dgl.NID][NodeMinibatches(part, FANOUTS, BATCH, "train").seeds]


def _dgl_server(set_dir: str, ip_config: str, part_id: int, clients: int) -> None:
    os.environ.update(DGL_DIST_MODE="distributed", DGL_ROLE="server", DGL_NUM_SERVER="1", DGL_SERVER_ID=str(part_id))
    from graviti_dist._dgl import dgl

    _one_machine_per_partition(dgl, part_id)
    dgl.distributed.DistGraphServer(part_id, ip_config, 1, clients, f"{set_dir}/graph.json", disable_shared_mem=True,
                                    graph_format=["csc", "coo"]).start()


def _dgl_client(set_dir: str, ip_config: str, rank: int, steps: int, out) -> None:
    os.environ.update(DGL_DIST_MODE="distributed", DGL_ROLE="client", DGL_NUM_SERVER="1", DGL_NUM_SAMPLER="0")
    import torch

    from graviti_dist._dgl import dgl

    torch.set_num_threads(1)
    seeds = _seeds(set_dir, rank)
    gpb = dgl.distributed.load_partition_book(f"{set_dir}/graph.json", rank)[0]
    _one_machine_per_partition(dgl, rank)
    dgl.distributed.initialize(ip_config)
    g = dgl.distributed.DistGraph("graph", gpb=gpb)
    types, per_type = gpb.map_to_per_ntype(seeds)
    train = {g.ntypes[t]: per_type[types == t] for t in torch.unique(types).tolist()}
    columns = {t: [k for k in g.nodes[t].data.keys() if k.startswith("feat_")] for t in g.ntypes}
    loader = dgl.dataloading.DistNodeDataLoader(g, train, dgl.dataloading.NeighborSampler(FANOUTS), batch_size=BATCH,
                                                shuffle=True)
    out.put({"system": "distgraph", "rank": rank, **_timed(_dgl_steps(g, loader, columns), steps)})
    dgl.distributed.exit_client()


def _one_machine_per_partition(dgl, part_id: int) -> None:
    """Make this process behave as if its partition had a machine to itself. DGL finds a process's
    machine by matching its IPs against ``ip_config`` (all 127.0.0.1 here): it is told instead. Each
    KVStore server puts every feature column in shared memory under the column's name, and a client
    maps its machine's columns by that name: two partitions' servers on one host overwrite each
    other's (SIGBUS when the sizes differ), so the names get the partition as a prefix."""
    from dgl.distributed import kvstore

    dgl.distributed.rpc_client.get_local_machine_id = lambda namebook: part_id
    create = kvstore.empty_shared_mem
    kvstore.empty_shared_mem = lambda name, *args: create(f"p{part_id}-{name}", *args)


def _dgl_steps(g, loader, columns):
    while True:
        for input_nodes, output_nodes, _ in loader:
            rows = sum(g.nodes[t].data[c][ids].numel() for t, ids in input_nodes.items() for c in columns[t])
            yield sum(v.numel() for v in output_nodes.values()), rows


def _timed(steps_iter, steps: int) -> dict:
    """Seeds/s over ``steps`` steps after ``WARMUP``."""
    seeds, started = 0, None
    for i, (count, _) in enumerate(steps_iter):
        if i == WARMUP:
            started, seeds = time.perf_counter(), 0
        if i == WARMUP + steps:
            break
        seeds += count
    seconds = time.perf_counter() - started
    return {"steps": steps, "seconds": round(seconds, 3), "seeds_per_s": round(seeds / seconds), "peak_rss_gb": _peak_rss_gb()}


def _peak_rss_gb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 2**20, 3)
    return 0.0


def distgraph(set_dir: str, steps: int, ports: tuple[int, ...]) -> list[dict]:
    """DistGraph's servers (one per partition, on 127.0.0.1 ``ports``) and one trainer per partition as clients."""
    with tempfile.TemporaryDirectory(prefix="distgraph-") as folder:  # one run's ip_config, gone after it
        ip_config = Path(folder) / "ip_config.txt"
        ip_config.write_text("".join(f"127.0.0.1 {port}\n" for port in ports))
        parts = len(ports)
        ctx = mp.get_context("spawn")
        servers = [ctx.Process(target=_dgl_server, args=(set_dir, str(ip_config), p, parts)) for p in range(parts)]
        for s in servers:
            s.start()
        out = ctx.Queue()
        clients = [ctx.Process(target=_dgl_client, args=(set_dir, str(ip_config), r, steps, out)) for r in range(parts)]
        for c in clients:
            c.start()
        try:
            results = _collect(out, parts, [*servers, *clients], limit_s=240)
        finally:
            for process in (*clients, *servers):
                process.join(30)
                if process.is_alive():
                    process.terminate()
    return sorted(results, key=lambda r: r["rank"])


def _collect(out, count: int, processes: list, limit_s: float) -> list[dict]:
    """``count`` results from ``out``; a process that died, or ``limit_s`` passing, is an error, not a hang
    (a DGL client waits for its servers indefinitely)."""
    import queue

    results, deadline = [], time.monotonic() + limit_s
    while len(results) < count:
        try:
            results.append(out.get(timeout=2))
        except queue.Empty:
            failed = [(p.name, p.exitcode) for p in processes if p.exitcode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                raise RuntimeError(f"DistGraph: {failed or 'no result'} after {limit_s if not failed else 'start'}"
                                   f" (servers, then clients; see their output above)")
    return results


def ours(set_dir: str, steps: int, through_stores: bool = False) -> list[dict]:
    """Our trainers' steps; ``through_stores`` sends even their own partition's work to its store
    (every row and every sample an actor request), as DistGraph without shared memory does."""
    import ray

    from graviti_dist.sampling import start_stores

    @ray.remote(num_cpus=1)
    class Trainer:
        def run(self, rank: int) -> dict:
            import numpy as np
            import torch

            from graviti_dist.partition import PartitionSet
            from graviti_dist.sampling import NodeRanges, RemoteMinibatches, connect_stores, load_worker_partition

            torch.set_num_threads(1)
            batches = RemoteMinibatches(load_worker_partition(set_dir, rank), connect_stores(2, "bench"),
                                        NodeRanges.of(PartitionSet(set_dir)), FANOUTS, BATCH, "train", seed=rank)
            if through_stores:  # this worker holds nothing as far as sampling knows: every node is asked for
                batches.local.part_id = -1
                batches.local.local_ids = lambda nodes, inner_only=False: np.full(len(nodes), -1, np.int64)
            timed = _timed(self._steps(batches), steps)
            return {"system": "ours-through-stores" if through_stores else "ours", "rank": rank, **timed,
                    "store_requests_per_step": round(batches.requests / (WARMUP + steps), 2)}

        @staticmethod
        def _steps(batches):
            while True:
                for seeds, _ in batches.plan():
                    inputs, _ = batches.sample(seeds)
                    batches.features(inputs)
                    yield seeds.numel(), inputs.numel()

    stores = start_stores(set_dir, [0, 1], "bench")
    trainers = [Trainer.remote() for _ in range(2)]
    results = ray.get([t.run.remote(r) for r, t in enumerate(trainers)])
    del stores, trainers
    return results


def table(result: dict) -> str:
    rows = ["| 2 trainers, synthetic-1m 1-hop set, sample 10,10 + fetch features | seeds/s per trainer (median) | per round |",
            "|---|---|---|"]
    for name, label in (("distgraph", "DGL DistGraph (socket RPC servers; own partition's rows from shared memory, every sample remote)"),
                        ("ours_through_stores", "graph store on Ray, every request remote (ours)"),
                        ("ours", "graph store on Ray, own partition in process (ours, as `graviti train` runs)")):
        r = result[name]
        rows.append(f"| {label} | {r['seeds_per_s']:,} | {r['per_round']} |")
    rows += ["", f"Ours over DistGraph: {result['ours_over_distgraph']}x as `graviti train` runs, "
                 f"{result['through_stores_over_distgraph']}x with every request of ours remote (medians of per-round ratios). "
                 + (f"Measured {result['environment']['date'][:10]} at commit `{result['environment']['commit'][:12]}` on "
                    f"{result['environment']['machine']['cpu']}, {result['environment']['machine']['cores']} cores."
                    if "environment" in result else "")]
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--port", type=int, default=30150, help="DistGraph servers listen on 127.0.0.1 PORT and PORT+1")
    args = parser.parse_args()
    from benchmarks.bench_remote import _crawl, _partitioned
    from graviti_dist.runtime.ray_cluster import ray_session

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-distgraph-"))
    set_dir = workdir / "1m-2parts-1hop"
    _partitioned(_crawl(workdir, 24_000, 0), set_dir, 2, 1)
    systems = {"distgraph": lambda: distgraph(str(set_dir), args.steps, (args.port, args.port + 1)),
               "ours": lambda: ours(str(set_dir), args.steps),
               "ours_through_stores": lambda: ours(str(set_dir), args.steps, through_stores=True)}
    runs: dict[str, list[list[dict]]] = {name: [] for name in systems}
    with ray_session(num_threads=1):
        for i in range(args.rounds):
            for name in (list(systems) if i % 2 == 0 else list(systems)[::-1]):
                measured = systems[name]()
                print(json.dumps(measured), flush=True)
                runs[name].append(measured)
    result = {"benchmark": "distgraph", "set": set_dir.name, "fanouts": FANOUTS, "batch_size": BATCH, "steps": args.steps}
    for name, rounds in runs.items():
        per_round = [statistics.mean(r["seeds_per_s"] for r in trainers) for trainers in rounds]
        result[name] = {"seeds_per_s": round(statistics.median(per_round)), "per_round": [round(x) for x in per_round],
                        "peak_rss_gb": max(r["peak_rss_gb"] for trainers in rounds for r in trainers), "runs": rounds}
    for name, key in (("ours", "ours_over_distgraph"), ("ours_through_stores", "through_stores_over_distgraph")):
        ratios = [o / d for o, d in zip(result[name]["per_round"], result["distgraph"]["per_round"])]
        result[key] = round(statistics.median(ratios), 2)
    path = write_result("distgraph", result)
    write_whole(RESULTS / "distgraph.md", table(result))
    print(table(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
