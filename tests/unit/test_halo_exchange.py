"""Layer-wise inference over a 1-hop set (partitions exchanging halo rows between layers) equals
full-halo inference, in this process (over Ray actors and on Twitch: tests/integration/test_infer_serve.py)."""

import numpy as np
import pytest
import torch

from graviti_dist.crawl import SyntheticSpec, generate_crawl
from graviti_dist.infer import Predictions, Predictor, run_inference
from graviti_dist.partition import PartitionSpec, partition_crawl
from graviti_dist.sampling import load_worker_partition
from graviti_dist.train import RunDir, TrainConfig, build_model, encoder_config
from graviti_dist.train.run_dir import Selection, TaskChoice


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("exchange")
    generate_crawl(root / "crawl", SyntheticSpec(users=400, seed=2), progress=False)
    for hops in (1, 2, 3):  # a seeded random assignment: the same parts in each set
        partition_crawl(root / "crawl", root / f"hops{hops}",
                        PartitionSpec(num_parts=3, num_hops=hops, method="random", seed=1, executor="local"))
    return root


def _run(root, out, layers: int, selection: bool = False, degree: bool = False) -> RunDir:
    """An untrained run (random weights) of a ``layers``-layer GAT; with ``selection``, two node tasks
    answered from other epochs' weights; with ``degree``, reading the log in-degree inputs."""
    run = RunDir(out)
    config = TrainConfig(partitions=str(root / "hops1"), out=str(out),
                         model={"hidden": 8, "heads": 2, "fanouts": [3] * layers, "degree_features": degree})
    run.write_config(config)
    part = load_worker_partition(root / "hops1", 0)
    weights = {}
    for seed in (0, 3, 7):
        torch.manual_seed(seed)
        weights[seed] = build_model(part, encoder_config(config), config.balancing).state_dict()
    run.save_best_model(weights[0])
    if selection:
        for epoch in (3, 7):
            run.save_task_best(epoch, weights[epoch])
        run.write_selection(Selection(tasks={"is_bot": TaskChoice(epoch=3, metric="roc_auc", mode="max", value=0.7),
                                             "interest": TaskChoice(epoch=7, metric="accuracy", mode="max", value=0.6)},
                                      summed_epoch=5, summed_test={}))
    return run


def _by_id(out) -> dict[str, dict[str, dict]]:
    tables = Predictions(out)
    return {t: {row["id"]: row for row in tables.read_node_type(t).to_pylist()} for t in ("user", "post")}


def _assert_same(a: dict, b: dict) -> None:
    for node_type in a:
        assert a[node_type].keys() == b[node_type].keys()
        for raw, row in a[node_type].items():
            other = b[node_type][raw]
            for column, value in row.items():
                if isinstance(value, (float, list)):
                    np.testing.assert_allclose(np.asarray(other[column], np.float32), np.asarray(value, np.float32),
                                               rtol=1e-5, atol=1e-5, err_msg=f"{node_type} {raw} {column}")
                else:
                    assert other[column] == value, (node_type, raw, column)


@pytest.mark.parametrize("layers,selection,degree", [(2, True, True), (3, False, False)])
def test_a_one_hop_set_predicts_what_a_full_halo_set_does(sets, tmp_path, layers, selection, degree):
    # with degree inputs, every set's rows carry the same (set-wide) log in-degrees
    run = _run(sets, tmp_path / "run", layers, selection, degree)
    user = load_worker_partition(sets / "hops1", 0)
    width = torch.load(run.best_model_path)["encoder.project.types.1.dense.weight"].shape[1]
    assert user.inputs[1].structural_width > 0
    assert width == user.inputs[1].dense_width - (0 if degree else user.inputs[1].structural_width)
    shallow = run_inference(run.path, sets / "hops1", tmp_path / "shallow", executor="local")
    full = run_inference(run.path, sets / f"hops{layers}", tmp_path / "full", executor="local")
    assert shallow["halo_exchange"] and not full["halo_exchange"]
    assert shallow["task_epochs"] == ({"is_bot": 3, "interest": 7} if selection else {})
    _assert_same(_by_id(tmp_path / "full"), _by_id(tmp_path / "shallow"))
    # Without the exchange, a 1-hop set's halo rows would stay at their projected inputs: the
    # outputs would differ, so the comparison above can fail.
    assert full["rows"] == shallow["rows"] and sum(full["rows"].values()) > 400


def test_serving_a_one_hop_set_answers_what_infer_writes(sets, tmp_path):
    run = _run(sets, tmp_path / "run", 2, selection=True)
    run_inference(run.path, sets / "hops1", tmp_path / "pred", executor="local")
    users = _by_id(tmp_path / "pred")["user"]
    online = Predictor(run.path, sets / "hops1").predict([str(u) for u in users], embedding=True)["predictions"]
    for raw, row in users.items():
        answer = online[str(raw)]
        assert answer["predictions"]["is_bot"]["probability"] == pytest.approx(row["is_bot"], abs=1e-6)
        assert answer["predictions"]["interest"]["class"] == row["interest"]
        np.testing.assert_allclose(answer["embedding"], row["embedding"], atol=1e-6)
