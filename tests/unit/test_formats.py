"""The on-disk formats' owners, without Ray: a partition set built in this process and read back
through its typed manifest, the run directory, staged outputs, and field errors under CLI flags."""

import json

import pytest
import torch

from graviti_dist.cli import main
from graviti_dist.errors import FieldError, GravitiError
from graviti_dist.partition import PartitionSet, PartitionSpec, check_partitions, partition_crawl, read_manifest
from graviti_dist.runtime.output import staged_output
from graviti_dist.sampling import NodeMinibatches, load_worker_partition
from graviti_dist.train import RunDir, TrainConfig, load_run
from graviti_dist.train.run_dir import TrainingState


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    from tests.helpers import small_schema, small_tables, write_crawl

    root = tmp_path_factory.mktemp("formats")
    nodes, edges = small_tables()
    crawl = write_crawl(root / "crawl", small_schema(), nodes, edges)
    report = partition_crawl(crawl, root / "parts", PartitionSpec(num_parts=2, method="random", executor="local"))
    return crawl, root / "parts", report


def test_local_partition_set_reads_back_typed(small_set):
    crawl, parts, report = small_set
    assert report["executor"] == "local" and report["num_parts"] == 2
    manifest = read_manifest(parts)
    assert manifest.num_parts == 2 and manifest.num_hops == 2 and manifest.crawl == str(crawl.absolute())
    assert [t.name for t in manifest.node_tasks] == ["bot", "topic"] and [t.name for t in manifest.link_tasks] == ["rec"]
    assert manifest.task("rec").is_link and not manifest.task("bot").is_link
    assert manifest.task("topic").classes == ["music", "sport"]
    assert manifest.relation("authored").dst == "post"
    assert sum(p.inner_nodes["user"] for p in manifest.parts) == 4
    # the JSON on disk keeps the keys every earlier reader used
    raw = json.loads(PartitionSet(parts).manifest_path.read_text())
    assert raw["spec"]["num_parts"] == 2 and raw["schema"]["relations"]["authored"]["src"] == "user"
    assert check_partitions(parts)["parts"] == 2


def test_a_worker_partition_samples_from_the_local_set(small_set):
    _, parts, _ = small_set
    part = load_worker_partition(parts, 0)
    assert part.ntypes == ["post", "user"] and part.manifest.num_parts == 2
    batches = NodeMinibatches(part, [2, 2], 4, "train", seed=0)
    for batch in batches:
        assert batch.seed_type.numel() >= 1 and set(batch.labels) == {"bot", "topic"}


def test_unfinished_or_damaged_sets_are_named(small_set, tmp_path):
    _, parts, _ = small_set
    with pytest.raises(GravitiError, match="not a finished partition set"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(GravitiError, match="manifest.json: not valid JSON"):
        read_manifest(tmp_path)
    raw = json.loads(PartitionSet(parts).manifest_path.read_text())
    del raw["spec"]["num_parts"]
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(GravitiError, match=r"not a valid manifest \(spec.num_parts"):
        read_manifest(tmp_path)


def test_spec_errors_name_the_field_and_the_cli_names_the_flag(small_set, tmp_path, capsys):
    crawl, _, _ = small_set
    with pytest.raises(FieldError, match="^num_hops must be at least 1, got 0$") as err:
        PartitionSpec(num_parts=2, num_hops=0)
    assert err.value.field == "num_hops"
    assert main(["partition", str(crawl), "--out", str(tmp_path / "p"), "--num-parts", "2", "--num-hops", "0"]) == 2
    assert "--num-hops must be at least 1, got 0" in capsys.readouterr().err
    # a field with no flag of that name stays in the library's words
    assert main(["partition", str(crawl), "--out", str(tmp_path / "p"), "--num-parts", "2", "--executor", "local",
                 "--address", "127.0.0.1:1"]) == 2
    assert "--address is for the Ray executor" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_staged_output_publishes_whole_or_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_output(out) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("died")
    assert list(tmp_path.iterdir()) == []
    with staged_output(out) as tmp:
        (tmp / "a.txt").write_text("new")
    assert (out / "a.txt").read_text() == "new"
    with pytest.raises(FieldError, match="already exists"):
        with staged_output(out):
            pass
    with staged_output(out, overwrite=True) as tmp:
        assert (out / "a.txt").exists()  # the old output stays until the new one is complete
        (tmp / "b.txt").write_text("newer")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_run_dir_records_checkpoints_and_load_run(small_set, tmp_path):
    _, parts, _ = small_set
    run = RunDir(tmp_path / "run")
    config = TrainConfig(partitions=str(parts), out=str(run.path))
    run.write_config(config)
    assert run.read_config() == config and not run.holds_run()
    for epoch in range(3):
        run.append_record({"epoch": epoch, "loss/bot": 1.0 / (epoch + 1)})
    run.keep_records_before(2)
    assert [r["epoch"] for r in run.read_records()] == [0, 1]
    folder = run.ray_storage / "train" / "checkpoint_000001"
    folder.mkdir(parents=True)
    weights = {"w": torch.ones(2)}
    TrainingState(model=weights, optimizer={}, schedule=None, epoch=1, best=(0.5, 1), best_state=weights, stale=0,
                  rng=torch.get_rng_state()).save(folder)
    assert run.latest_checkpoint() == folder and TrainingState.load(folder).best == (0.5, 1)
    with pytest.raises(GravitiError, match="did not finish"):
        load_run(run.path)
    loaded = load_run(folder)
    assert torch.equal(loaded.state["w"], torch.ones(2)) and loaded.config == config
    run.save_best_model(weights)
    assert load_run(run.path).source == run.best_model_path


def test_batch_and_online_predictions_agree_on_a_local_set(small_set, tmp_path):
    from graviti_dist.infer import Predictions, Predictor, run_inference
    from graviti_dist.train import build_model, encoder_config

    _, parts, _ = small_set
    run = RunDir(tmp_path / "run")
    config = TrainConfig(partitions=str(parts), out=str(run.path), model={"hidden": 8, "heads": 2, "fanouts": [2, 2]})
    run.write_config(config)
    torch.manual_seed(0)
    part = load_worker_partition(parts, 0)
    run.save_best_model(build_model(part, encoder_config(config), config.balancing).state_dict())  # untrained
    summary = run_inference(run.path, parts, tmp_path / "pred", executor="local", top_k=2)
    out = Predictions(tmp_path / "pred")
    assert summary["rows"] == {"post": 3, "user": 4} and out.read_summary()["rows"] == summary["rows"]
    users = out.read_node_type("user").to_pylist()
    online = Predictor(run.path, parts).predict([u["id"] for u in users])["predictions"]
    for row in users:
        assert online[row["id"]]["predictions"]["bot"]["probability"] == pytest.approx(row["bot"], abs=1e-6)
        assert online[row["id"]]["predictions"]["topic"]["class"] == row["topic"]
    recommended = out.read_recommendations("rec").to_pylist()
    assert len(recommended) == 4 and all(len(r["items"]) == 2 for r in recommended)


def test_per_task_selection_answers_each_task_from_its_own_epoch(small_set, tmp_path):
    """A run whose bot task chose epoch 3 and topic epoch 7: infer and serve answer bot from epoch 3's
    weights, topic from epoch 7's, the embedding from best_model.pt; --select summed uses best_model.pt for all."""
    from graviti_dist.infer import Predictions, Predictor, run_inference
    from graviti_dist.train import build_model, encoder_config
    from graviti_dist.train.run_dir import Selection, TaskChoice

    _, parts, _ = small_set
    run = RunDir(tmp_path / "run")
    config = TrainConfig(partitions=str(parts), out=str(run.path), model={"hidden": 8, "heads": 2, "fanouts": [2, 2]})
    run.write_config(config)
    part = load_worker_partition(parts, 0)
    weights = {}
    for seed in (0, 3, 7):  # three different untrained models stand for three epochs
        torch.manual_seed(seed)
        weights[seed] = build_model(part, encoder_config(config), config.balancing).state_dict()
    run.save_best_model(weights[0])
    for epoch in (3, 7):
        run.save_task_best(epoch, weights[epoch])
    run.save_task_best(9, weights[7])  # a stale file: pruned below
    run.write_selection(Selection(tasks={"bot": TaskChoice(epoch=3, metric="roc_auc", mode="max", value=0.7),
                                         "topic": TaskChoice(epoch=7, metric="accuracy", mode="max", value=0.6)},
                                  summed_epoch=5, summed_test={}))
    run.prune_task_bests({3, 7})
    assert sorted(p.name for p in run.task_best_path(0).parent.iterdir()) == ["epoch-00003.pt", "epoch-00007.pt"]

    def users(select):
        run_inference(run.path, parts, tmp_path / f"pred-{select}", executor="local", select=select)
        return {r["id"]: r for r in Predictions(tmp_path / f"pred-{select}").read_node_type("user").to_pylist()}

    def only(state):  # a run whose best model is ``state``, selected summed
        single = RunDir(tmp_path / f"single-{id(state)}")
        single.write_config(config)
        single.save_best_model(state)
        run_inference(single.path, parts, single.path / "pred", executor="local")
        return {r["id"]: r for r in Predictions(single.path / "pred").read_node_type("user").to_pylist()}

    per_task, summed = users("per_task"), users("summed")
    of = {seed: only(weights[seed]) for seed in (0, 3, 7)}
    for raw, row in per_task.items():
        assert row["bot"] == pytest.approx(of[3][raw]["bot"], abs=1e-6) and row["topic_proba"] == pytest.approx(of[7][raw]["topic_proba"], abs=1e-6)
        assert row["embedding"] == pytest.approx(of[0][raw]["embedding"], abs=1e-6)
        assert summed[raw]["bot"] == pytest.approx(of[0][raw]["bot"], abs=1e-6)
    assert any(abs(of[3][r]["bot"] - of[0][r]["bot"]) > 1e-4 for r in per_task)  # the epochs do differ
    online = Predictor(run.path, parts).predict(list(per_task))["predictions"]
    assert all(online[r]["predictions"]["bot"]["probability"] == pytest.approx(per_task[r]["bot"], abs=1e-6) for r in per_task)
    run.task_best_path(7).unlink()
    with pytest.raises(GravitiError, match="--select summed"):
        Predictor(run.path, parts)
    assert Predictor(run.path, parts, select="summed").run.task_epoch == {}


def test_dense_rows_are_scaled_alike_in_every_partition(small_set):
    from graviti_dist._dgl import dgl

    _, parts, _ = small_set
    user = read_manifest(parts).ntypes.index("user")
    rows: dict[int, list[torch.Tensor]] = {}
    for p in range(2):
        part = load_worker_partition(parts, p)
        local = torch.nonzero(part.node_type == user).squeeze(1)
        for node, shuffled in zip(local.tolist(), part.graph.ndata[dgl.NID][local].tolist()):
            rows.setdefault(shuffled, []).append(part.dense[user][part.row[node]])
    shared = [r for r in rows.values() if len(r) == 2]
    assert shared, "no user node lies in both partitions"
    for a, b in shared:
        assert torch.equal(a, b)
    every = torch.stack([r[0] for r in rows.values()])  # each user once: the set's own statistics
    structural = part.inputs[user].structural_width  # the log in-degrees, after the crawl's 2 dense columns
    assert structural == len(read_manifest(parts).structural["user"].columns) > 0 and every.shape[1] == 2 + structural
    torch.testing.assert_close(every.mean(0), torch.zeros(every.shape[1]), atol=1e-5, rtol=0)


def _copy_set(parts, tmp_path):
    import shutil

    shutil.copytree(parts, tmp_path / "set")
    return tmp_path / "set"


@pytest.mark.parametrize("damage, expected", [
    (lambda s: (s / "part1" / "node_feat.dgl").write_bytes((s / "part1" / "node_feat.dgl").read_bytes()[:100]),
     r"part1/node_feat.dgl: 100 bytes, the manifest records [\d,]+ \(truncated or replaced\)"),
    (lambda s: (s / "part1" / "halo_feat.dgl").write_bytes(b""), r"part1/halo_feat.dgl: 0 bytes"),
    (lambda s: (s / "part1" / "graph.dgl").unlink(), r"part1/graph.dgl: missing \(the manifest records"),
    (lambda s: (s / "graph.json").unlink(), r"graph.json: missing"),
    (lambda s: (s / "id_map" / "user.parquet").write_bytes(b"PAR1"), r"id_map/user.parquet: 4 bytes"),
], ids=["truncated-features", "empty-halo", "missing-graph", "missing-config", "truncated-id-map"])
def test_damaged_files_are_named_before_dgl_reads_them(small_set, tmp_path, damage, expected):
    _, parts, _ = small_set
    damaged = _copy_set(parts, tmp_path)
    damage(damaged)
    for read in (lambda: load_worker_partition(damaged, 1), lambda: check_partitions(damaged)):
        with pytest.raises(GravitiError, match=expected) as error:
            read()
        assert "re-partition the crawl" in str(error.value)


def test_check_verifies_contents_and_the_manifests_claims(small_set, tmp_path):
    _, parts, _ = small_set
    edited = _copy_set(parts, tmp_path)
    feats = edited / "part0" / "node_feat.dgl"
    data = bytearray(feats.read_bytes())
    data[-1] ^= 0xFF  # same size, other content: only the checksum sees it
    feats.write_bytes(bytes(data))
    load_worker_partition(edited, 1)  # a worker of another part is not held up
    with pytest.raises(GravitiError, match="part0/node_feat.dgl: its content differs from the manifest's SHA-256"):
        check_partitions(edited)
    feats.write_bytes((parts / "part0" / "node_feat.dgl").read_bytes())
    manifest = json.loads((edited / "manifest.json").read_text())
    for key, value, message in (("num_hops", 1, "num_hops is 1 in manifest.json but 2 in graph.json"),
                                ("num_parts", 3, "num_parts is 3 in manifest.json but 2 in graph.json")):
        (edited / "manifest.json").write_text(json.dumps({**manifest, "spec": {**manifest["spec"], key: value}}))
        with pytest.raises(GravitiError, match=message):
            check_partitions(edited)
    wide = json.loads(json.dumps(manifest))
    wide["features"]["user"]["x"]["width"] = 3
    (edited / "manifest.json").write_text(json.dumps(wide))
    with pytest.raises(GravitiError, match="feature user/x is 2 wide, the manifest says 3"):
        check_partitions(edited)


@pytest.mark.parametrize("manifest_text, expected", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a valid manifest"),
    ('{"format_version": 99}', "a set of format 99, written by a newer graviti-dist; this one reads formats up to 2"),
])
def test_an_invalid_manifest_is_named(small_set, tmp_path, manifest_text, expected):
    _, parts, _ = small_set
    edited = _copy_set(parts, tmp_path)
    (edited / "manifest.json").write_text(manifest_text)
    with pytest.raises(GravitiError, match=expected):
        read_manifest(edited)
    assert main(["partition", "--check", str(edited)]) == 2


def test_degree_columns_are_each_nodes_log_in_degree_per_relation(small_set):
    """Undo the standardisation of every inner node's structural columns and count its in-edges of
    each relation in the partition (inner nodes keep all their in-edges): they must agree."""
    from graviti_dist._dgl import dgl

    _, parts, _ = small_set
    manifest = read_manifest(parts)
    checked = 0
    for p in range(2):
        part = load_worker_partition(parts, p)
        dst = part.graph.edges()[1]
        for t, name in enumerate(manifest.ntypes):
            info = manifest.structural[name]
            assert set(info.columns) <= {":".join(c) for c in manifest.etypes if c[2] == name} and info.columns
            width = part.inputs[t].structural_width
            assert width == len(info.columns)
            inner = torch.nonzero(part.inner & (part.node_type == t)).squeeze(1)
            stored = part.dense[t][part.row[inner], -width:] * torch.tensor(info.std) + torch.tensor(info.mean)
            for column, relation in enumerate(info.columns):
                e = manifest.etypes.index(tuple(relation.split(":")))
                counts = torch.bincount(dst[part.graph.edata[dgl.ETYPE] == e], minlength=part.graph.num_nodes())[inner]
                torch.testing.assert_close(stored[:, column], torch.log1p(counts.float()), atol=1e-5, rtol=0)
                checked += int(counts.sum())
    assert checked > 0


def test_degree_features_on_a_set_without_them_is_refused(small_set, tmp_path):
    from graviti_dist.train.config import check_against_partitions

    _, parts, _ = small_set
    older = _copy_set(parts, tmp_path)
    manifest = json.loads(PartitionSet(older).manifest_path.read_text())
    del manifest["structural"]  # as sets written before degree columns
    PartitionSet(older).manifest_path.write_text(json.dumps(manifest))
    check_against_partitions(TrainConfig(partitions=str(older)))  # off (the default): trains as before
    with pytest.raises(GravitiError, match="model.degree_features: .* without degree columns"):
        check_against_partitions(TrainConfig(partitions=str(older), model={"degree_features": True}))
    check_against_partitions(TrainConfig(partitions=str(parts), model={"degree_features": True}))
