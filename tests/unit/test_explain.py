"""Explanations: each node's in-neighbours ranked by the last layer's attention (graviti infer --explain,
graviti serve's "explain"), checked against the model's own attention and the crawl's edges."""

from collections import defaultdict

import pytest
import torch

from graviti_dist.crawl import SyntheticSpec, generate_crawl
from graviti_dist.errors import FieldError
from graviti_dist.infer import Predictions, Predictor, run_inference
from graviti_dist.infer.explain import top_edges
from graviti_dist.partition import PartitionSpec, partition_crawl
from graviti_dist.sampling import load_worker_partition
from graviti_dist.train import RunDir, TrainConfig, build_model, encoder_config
from tests.helpers import crawl_content

ALL = 10**4  # more than any in-degree here: every in-edge is listed


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    generate_crawl(root / "crawl", SyntheticSpec(users=300, seed=3), progress=False)
    for hops in (1, 2):  # the same seeded random parts in both
        partition_crawl(root / "crawl", root / f"hops{hops}",
                        PartitionSpec(num_parts=2, num_hops=hops, method="random", seed=1, executor="local"))
    return root


def _run(root, out, kind: str = "gat") -> RunDir:
    run = RunDir(out)
    config = TrainConfig(partitions=str(root / "hops2"), out=str(out),
                         model={"kind": kind, "hidden": 8, "heads": 2, "fanouts": [3, 3]})
    run.write_config(config)
    torch.manual_seed(0)
    run.save_best_model(build_model(load_worker_partition(root / "hops2", 0), encoder_config(config), config.balancing).state_dict())
    return run


def test_top_edges_ranks_each_destinations_in_edges_by_weight():
    generator = torch.Generator().manual_seed(0)
    dst = torch.randint(0, 50, (400,), generator=generator)
    weight = torch.rand(400, generator=generator)
    top = top_edges(weight, dst, 60, 3)
    for d in range(60):
        mine = torch.nonzero(dst == d).squeeze(1)
        expected = mine[torch.argsort(weight[mine], descending=True)][:3].tolist()
        assert top[d][top[d] >= 0].tolist() == expected
        assert (top[d] < 0).sum() == max(0, 3 - mine.numel())  # padded past the in-degree


def _message_edges(crawl) -> dict[tuple[str, str, str], list]:
    """(relation as the model sees it, neighbour raw id, node raw id) -> the crawl edges' ts (None without)."""
    edges = defaultdict(list)
    for name, table in crawl_content(crawl).items():
        if "src" not in table.column_names:
            continue
        ts = table["ts"].to_pylist() if "ts" in table.column_names else [None] * len(table)
        for src, dst, t in zip(table["src"].to_pylist(), table["dst"].to_pylist(), ts):
            edges[(name, str(src), str(dst))].append(t)
            edges[(f"rev_{name}", str(dst), str(src))].append(t)
    return edges


def test_explanations_are_the_models_attention_over_real_edges(sets, tmp_path):
    run = _run(sets, tmp_path / "run")
    plain = run_inference(run.path, sets / "hops2", tmp_path / "plain", executor="local")
    explained = run_inference(run.path, sets / "hops2", tmp_path / "explained", executor="local", explain=ALL)
    assert explained["explain"] == ALL and plain["explain"] == 0
    out = Predictions(tmp_path / "explained")
    for node_type in ("user", "post"):  # explaining does not change a prediction
        assert out.read_node_type(node_type).sort_by("id").equals(
            Predictions(tmp_path / "plain").read_node_type(node_type).sort_by("id"))
    edges = _message_edges(sets / "crawl")
    users = out.read_explanations("user").to_pylist()
    per_node = defaultdict(list)
    for row in users:
        per_node[row["id"]].append(row)
        times = edges.get((row["relation"], row["neighbour_id"], str(row["id"])))
        assert times is not None, row  # every listed neighbour sends the node a message in the crawl
        assert (row["ts"] is None) == (times[0] is None) and (row["ts"] is None or row["ts"] in times), row
    assert len(per_node) > 250
    for node, rows in per_node.items():  # all in-edges listed: the head-averaged attention sums to 1
        assert sum(r["weight"] for r in rows) == pytest.approx(1, abs=1e-4), node
        assert [r["rank"] for r in rows] == list(range(len(rows)))
        assert all(a["weight"] >= b["weight"] for a, b in zip(rows, rows[1:]))
    assert any(r["ts"] is not None for r in users)


def test_serve_explains_as_infer_does_and_on_a_one_hop_set(sets, tmp_path):
    run = _run(sets, tmp_path / "run")
    run_inference(run.path, sets / "hops2", tmp_path / "pred", executor="local", explain=3)
    table = Predictions(tmp_path / "pred").read_explanations("user")
    expected = defaultdict(list)
    for row in table.to_pylist():
        expected[str(row["id"])].append(row)
    ids = sorted(expected)[:40]
    for parts in ("hops2", "hops1"):  # the 1-hop set exchanges halo rows: the same attention
        predictor = Predictor(run.path, sets / parts, explain_max=3)
        answers = predictor.predict(ids)["predictions"]
        found, _ = predictor.resolve(ids)
        explained = predictor.entries(found, list(predictor.tasks), False, explain=2)
        for raw in ids:
            assert explained[raw]["predictions"] == answers[raw]["predictions"]
            got = explained[raw]["explanation"]
            want = expected[raw][:2]
            assert [(g["id"], g["relation"]) for g in got] == [(w["neighbour_id"], w["relation"]) for w in want]
            assert [g["weight"] for g in got] == pytest.approx([w["weight"] for w in want], abs=1e-5)
            assert [g.get("ts") for g in got] == [w["ts"] for w in want]
        with pytest.raises(ValueError, match=r"explain: at most 3 \(graviti serve --explain-max\)"):
            predictor.entries(found, [], False, explain=4)


def test_an_mlp_run_has_nothing_to_explain_with(sets, tmp_path):
    run = _run(sets, tmp_path / "run", kind="mlp")
    with pytest.raises(FieldError, match="explanations read the GAT's attention"):
        run_inference(run.path, sets / "hops2", tmp_path / "x", executor="local", explain=2)
    predictor = Predictor(run.path, sets / "hops2")
    assert predictor.explain_max == 0
    with pytest.raises(ValueError, match="has no attention"):
        predictor.check_explain(1)
