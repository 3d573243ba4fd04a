"""Builders shared by tests: hand-made crawls (good and broken) and a crawl's content for comparisons."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml


def write_crawl(root: Path, schema: dict, nodes: dict[str, list[pa.Table]], edges: dict[str, list[pa.Table]]) -> Path:
    """Write a crawl by hand (so tests can also write broken ones)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "graph.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))
    for folder, tables in (("nodes", nodes), ("edges", edges)):
        for name, shards in tables.items():
            (root / folder / name).mkdir(parents=True, exist_ok=True)
            for i, table in enumerate(shards):
                pq.write_table(table, root / folder / name / f"part-{i:05d}.parquet")
    return root


def small_schema() -> dict:
    return {
        "name": "small",
        "node_types": {
            "user": {"features": [{"name": "x", "kind": "vector", "width": 2}, {"name": "region", "kind": "categorical"}],
                     "labels": ["bot", "topic"]},
            "post": {"features": [{"name": "age", "kind": "numeric"}], "labels": []},
        },
        "relations": {
            "follows": {"src": "user", "dst": "user"},
            "authored": {"src": "user", "dst": "post", "attributes": ["ts"]},
        },
        "tasks": [
            {"name": "bot", "type": "binary", "node_type": "user", "label": "bot"},
            {"name": "topic", "type": "multiclass", "node_type": "user", "label": "topic"},
            {"name": "rec", "type": "link", "relation": "authored"},
        ],
    }


def small_tables() -> tuple[dict, dict]:
    users = pa.table({
        "id": ["a", "b", "c", "d"],
        "x": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], None], pa.list_(pa.float32())),
        "region": ["eu", "us", "eu", None],
        "bot": pa.array([True, None, False, False]),
        "topic": pa.array(["sport", "music", None, "sport"]),
    })
    posts = pa.table({"id": ["p1", "p2", "p3"], "age": pa.array([1.0, float("nan"), 3.0])})
    follows = pa.table({"src": ["a", "b", "c", "a"], "dst": ["b", "c", "a", "c"]})
    authored = pa.table({"src": ["a", "a", "b"], "dst": ["p1", "p2", "p3"], "ts": pa.array([10, 20, 30], pa.int64())})
    return {"user": [users], "post": [posts]}, {"follows": [follows], "authored": [authored]}


def broken_crawl(tmp_path, nodes_edit=None, edges_edit=None, schema_edit=None):
    """The small crawl with edits applied to its tables or schema, written to ``tmp_path/bad``."""
    nodes, edges = small_tables()
    schema = small_schema()
    if nodes_edit:
        nodes_edit(nodes)
    if edges_edit:
        edges_edit(edges)
    if schema_edit:
        schema_edit(schema)
    return write_crawl(tmp_path / "bad", schema, nodes, edges)


def inspect_fails(crawl, capsys, *extra) -> str:
    """``graviti inspect`` on ``crawl`` exits 2 without a traceback or a summary; returns stderr."""
    from graviti_dist.cli import main

    json_out = crawl.parent / "summary.json"
    assert main(["inspect", str(crawl), "--json", str(json_out), *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert not json_out.exists(), "a failed inspect must not leave a summary behind"
    return err


def crawl_content(crawl: Path) -> dict[str, pa.Table]:
    """Every node and edge folder of a crawl as one table each (shards concatenated in file order)."""
    tables = {}
    for folder in sorted((crawl / "nodes").iterdir()) + sorted((crawl / "edges").iterdir()):
        files = sorted(folder.glob("*.parquet"))
        tables[folder.name] = pa.concat_tables(pq.read_table(f) for f in files).combine_chunks()
    return tables


def block_edges(blocks, inputs) -> list[list[tuple[int, int, int]]]:
    """Each block's edges as sorted (src, dst, relation) in the ids ``inputs`` gives the first block's
    source nodes (a block's destinations are the first source nodes of the next one)."""
    out, nodes = [], inputs
    for block in blocks:
        out.append(sorted(zip(nodes[block.src].tolist(), nodes[block.dst].tolist(), block.etype.tolist())))
        nodes = nodes[: block.num_dst]
    return out


def block_edge_inputs(blocks, inputs) -> list[list[tuple]]:
    """:func:`block_edges` with each edge's inputs (rounded) after its relation."""
    out, nodes = [], inputs
    for block in blocks:
        values = [tuple(round(v, 5) for v in row) for row in block.efeat.tolist()]
        out.append(sorted(zip(nodes[block.src].tolist(), nodes[block.dst].tolist(), block.etype.tolist(), values)))
        nodes = nodes[: block.num_dst]
    return out


def same_features(a, ids_a, b, ids_b) -> None:
    """Assert two TypedFeatures hold the same rows for the same ids, whatever their order."""
    import torch

    assert set(a.positions) == set(b.positions)
    for t in a.positions:
        order_a, order_b = torch.argsort(ids_a[a.positions[t]]), torch.argsort(ids_b[b.positions[t]])
        assert torch.equal(ids_a[a.positions[t]][order_a], ids_b[b.positions[t]][order_b])
        assert (t in a.dense) == (t in b.dense)
        if t in a.dense:
            assert torch.equal(a.dense[t][order_a], b.dense[t][order_b])
        for x, y in zip(a.categorical[t], b.categorical[t], strict=True):
            assert torch.equal(x[order_a], y[order_b])
        for x, y in zip(a.multihot[t], b.multihot[t], strict=True):
            assert torch.equal(x[order_a], y[order_b])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_node(args: list[str], env: dict, num_cpus: int = 1) -> subprocess.Popen:
    """A Ray node of its own (``ray start --block``) in a session of its own, so stopping it ends
    exactly its processes (never `ray stop`, which ends every Ray on the machine)."""
    ray = str(Path(sys.executable).with_name("ray"))
    # Each node's dashboard agent on a port of its own: on Ray's default (52365) any other Ray on
    # the machine (a benchmark's) keeps the agent from starting, and no job can be submitted.
    agent = f"--dashboard-agent-listen-port={free_port()}"
    return subprocess.Popen([ray, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", agent, *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop_node(node: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGTERM)
    try:
        node.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)


def wait_for(url: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # it answered (401 under token auth): it is up
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not answer within {seconds}s")


class ListenWatcher:
    """Collects, until stopped, every listening socket of ``pid``'s process tree (polled): what a
    command that starts a local Ray opened, to check it all stays on loopback. With ``marker``
    (an environment variable's name and value) it watches instead every process on the machine
    whose environment carries it: that also finds daemons that left the tree (a ``setsid`` Ray head)."""

    def __init__(self, pid: int | None = None, interval_s: float = 0.3, marker: tuple[str, str] | None = None):
        import threading

        self.pid, self.marker, self.interval_s, self.seen = pid, marker, interval_s, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _processes(self) -> list:
        import psutil

        if self.marker is None:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        key, value = self.marker
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(key) == value:
                    found.append(proc)
        return found

    def _poll(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                for proc in self._processes():
                    with contextlib.suppress(psutil.Error):
                        self.seen |= {(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections("inet")
                                      if c.status == psutil.CONN_LISTEN}
            except psutil.Error:
                pass
            time.sleep(self.interval_s)

    def stop(self) -> set:
        self._stop.set()
        self._thread.join()
        return self.seen

    def beyond_loopback(self) -> list:
        return sorted(s for s in self.stop() if s[1] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1"))


@contextlib.contextmanager
def serving(app, read_timeout: float = 10.0):
    """``app`` on a real uvicorn server with graviti serve's settings, on a free loopback port, in a
    thread; yields the port."""
    import threading

    import uvicorn

    from graviti_dist.infer.serve import server_config

    port = free_port()
    server = uvicorn.Server(server_config(app, read_timeout, host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def crawl_edges(set_dir, num_parts: int) -> "Counter":
    """The whole graph's (src, dst, relation) in shuffled ids with their multiplicity, from every
    partition's inner nodes' in-edges (each edge is some partition's inner in-edge exactly once)."""
    from collections import Counter

    from graviti_dist._dgl import dgl
    from graviti_dist.sampling import load_worker_partition

    edges = Counter()
    for p in range(num_parts):
        part = load_worker_partition(set_dir, p)
        nid, src, dst = part.graph.ndata[dgl.NID], *part.graph.edges()
        inner = part.inner[dst]
        edges.update(zip(nid[src[inner]].tolist(), nid[dst[inner]].tolist(), part.graph.edata[dgl.ETYPE][inner].tolist()))
    return edges


def assert_sampled_from(edges, inputs, blocks, fanouts) -> None:
    """Every sampled edge is an edge of the crawl (drawn at most as often as it exists), and each
    destination got min(fanout, in-degree) of its in-edges; the input nodes are nodes of the crawl."""
    from collections import Counter

    import numpy as np

    in_degree = Counter(dst for (_, dst, _), n in edges.items() for _ in range(n))
    for layer, fanout in zip(block_edges(blocks, inputs), fanouts):
        for (s, d, t), n in Counter(layer).items():
            assert edges[(s, d, t)] >= n, (s, d, t)
        for d, n in Counter(d for _, d, _ in layer).items():
            assert n == min(fanout, in_degree[d]), (d, n, in_degree[d])
    assert np.isin(inputs.numpy(), [s for s, _, _ in edges] + [d for _, d, _ in edges]).all()


def as_if_written(root, **spec):
    """Re-record the manifest's file sizes and checksums (and ``spec`` fields) after an edit, as a
    partitioner that wrote the edited files would have: what only the deep comparison can catch."""
    import json

    from graviti_dist.partition.layout import file_records

    manifest = json.loads((root / "manifest.json").read_text())
    manifest["spec"].update(spec)
    manifest["files"] = {k: v.model_dump() for k, v in file_records(root).items()}
    (root / "manifest.json").write_text(json.dumps(manifest))


def shallow_and_full_sets(root: Path, users: int, seed: int) -> tuple[Path, Path]:
    """A synthetic crawl partitioned twice into 3 parts, with 1-hop and 2-hop halos. A seeded random
    assignment gives both sets the same parts, hence the same shuffled ids."""
    from graviti_dist.crawl import SyntheticSpec, generate_crawl
    from graviti_dist.partition import PartitionSpec, partition_crawl

    generate_crawl(root / "crawl", SyntheticSpec(users=users, seed=seed), progress=False)
    for hops in (1, 2):
        partition_crawl(root / "crawl", root / f"hops{hops}",
                        PartitionSpec(num_parts=3, num_hops=hops, method="random", seed=1, executor="local"))
    return root / "hops1", root / "hops2"


def remote_minibatches(shallow_dir, part_id: int, fanouts, edge_inputs: bool = True, stores_edge_inputs: bool | None = None,
                       **kwargs):
    """Remote minibatches of part ``part_id`` of a 3-part 1-hop set, every store in this process; the
    worker's partition and the stores' (by default the same) loaded with edge inputs or without."""
    from graviti_dist.partition import PartitionSet
    from graviti_dist.sampling import load_worker_partition
    from graviti_dist.sampling.remote import GraphStore, LocalStore, NodeRanges, RemoteMinibatches

    stores_edge_inputs = edge_inputs if stores_edge_inputs is None else stores_edge_inputs
    stores = {p: LocalStore(GraphStore(str(shallow_dir), p, edge_inputs=stores_edge_inputs)) for p in range(3)}
    return RemoteMinibatches(load_worker_partition(shallow_dir, part_id, edge_inputs=edge_inputs), stores,
                             NodeRanges.of(PartitionSet(shallow_dir)), fanouts, 10**9, "train", shuffle=False, **kwargs)
