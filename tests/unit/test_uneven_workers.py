"""Two DDP workers over gloo (two real processes, no Ray) where one worker's partition holds no
training seeds: it must take every step with the other (empty minibatches, zero loss), or the
other waits forever in the gradient all-reduce; both end with the same weights. The model uses
GradNorm, whose per-task gradient norms are taken inside DDP's forward."""

import json
import time

import pytest
import torch
import torch.multiprocessing as mp

from graviti_dist.partition import PartitionSpec, partition_crawl


@pytest.fixture(scope="module")
def two_parts(tmp_path_factory):
    from tests.helpers import small_schema, small_tables, write_crawl

    root = tmp_path_factory.mktemp("uneven")
    nodes, edges = small_tables()
    crawl = write_crawl(root / "crawl", small_schema(), nodes, edges)
    partition_crawl(crawl, root / "parts", PartitionSpec(num_parts=2, method="random", executor="local"))
    return root / "parts"


def _worker(rank: int, parts: str, rendezvous: str, out: str) -> None:
    import torch.distributed as dist

    from graviti_dist.model import EncoderConfig
    from graviti_dist.sampling import MinibatchStream, NodeMinibatches, load_worker_partition
    from graviti_dist.train.loop import build_model, make_optimizer, train_epoch

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    torch.manual_seed(0)
    part = load_worker_partition(parts, rank)
    train = NodeMinibatches(part, [2, 2], 2, "train", seed=rank)
    if rank == 1:  # this worker's partition holds nothing to train on
        train.seeds = train.seeds[:0]
        train.links = {name: positions[:0] for name, positions in train.links.items()}
    core = build_model(part, EncoderConfig(hidden=8, heads=2), "gradnorm")
    core.every_parameter_in_loss = True
    model = torch.nn.parallel.DistributedDataParallel(core, find_unused_parameters=False)
    optimizer = make_optimizer(core.parameters(), 1e-2)
    steps = torch.tensor([len(train)])
    dist.all_reduce(steps, op=dist.ReduceOp.MAX)
    stream = MinibatchStream([train])
    totals = [train_epoch(model, stream.epoch(int(steps)), optimizer) for _ in range(2)]
    weights = torch.cat([p.detach().reshape(-1) for p in core.parameters()])
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"own_steps": len(train), "steps": [t.steps for t in totals], "empty": [t.empty_steps for t in totals],
                   "losses": totals[0].mean_losses(), "weights": weights.tolist(),
                   "task_weights": core.balancer.effective_weights()}, f)
    dist.destroy_process_group()


def test_a_worker_without_training_seeds_keeps_step_with_the_others(two_parts, tmp_path):
    context = mp.start_processes(_worker, args=(str(two_parts), str(tmp_path / "rendezvous"), str(tmp_path / "out")),
                                 nprocs=2, join=False, start_method="spawn")
    deadline = time.time() + 120
    while not context.join(timeout=1):  # raises the workers' error, if any
        if time.time() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("a worker hung: the two did not take the same steps")
    busy, idle = (json.loads((tmp_path / f"out.{rank}").read_text()) for rank in (0, 1))
    assert busy["own_steps"] > 0 and idle["own_steps"] == 0
    assert idle["steps"] == busy["steps"] == [busy["own_steps"]] * 2 and idle["empty"] == idle["steps"]
    assert busy["empty"] == [0, 0] and all(v == 0.0 for v in idle["losses"].values())
    assert any(v > 0 for v in busy["losses"].values())
    assert idle["weights"] == busy["weights"]  # the empty steps took part in every all-reduce
    assert idle["task_weights"] == busy["task_weights"] and any(abs(w - 1.0) > 1e-4 for w in busy["task_weights"].values())
