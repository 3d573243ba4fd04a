"""The graph store on Ray: one actor per partition, found by name, restarted by Ray when it dies.

Each training worker starts the store actors of the partitions it owns on its own node (hard node
affinity), so requests for a partition go to the machine that already reads it and the store reads
the worker's copy of it; every worker then looks every store up by name. Actors are threaded
(``max_concurrency``): requests from several workers overlap, and DGL's sampler and numpy's
gathers release the GIL. A killed actor is restarted (``max_restarts``) and the requests it was
serving are retried (``max_task_retries``), so training goes on; a missing store is a clear error.

One copy of a partition per node: the worker that owns a partition puts its arrays in Ray's
object store (``load_shared``) and both the worker and the store actor read that copy
(numpy arrays come out of the object store as views of shared memory, on the same node
without a copy). The worker owns the object, so a restarted store finds it again.
"""

from __future__ import annotations

import os

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from graviti_dist.errors import GravitiError
from graviti_dist.runtime.ray_cluster import ray_get
from graviti_dist.sampling.remote import GraphStore
from graviti_dist.runtime.memory import release_free_memory
from graviti_dist.sampling.worker_partition import (PartitionArrays, WorkerPartition, from_arrays, load_worker_partition,
                                                    partition_arrays)

# Requests from every worker of a 2-core machine, or from 8 workers on a cluster, overlap here.
STORE_CONCURRENCY = 8
RESTARTS = 3


class _StoreActor(GraphStore):
    def __init__(self, part_dir: str, part_id: int, arrays: PartitionArrays | None = None, edge_inputs: bool = True):
        # Ray hands ``arrays`` over resolved from the object store: views, not a copy of the partition.
        super().__init__(part_dir, part_id, from_arrays(arrays) if arrays is not None else None, edge_inputs)

    def node_id(self) -> str:
        """The Ray node this store runs on (placement is reported with the run)."""
        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        """The store's process (the memory benchmark measures it)."""
        return os.getpid()


def store_name(run_id: str, part_id: int) -> str:
    return f"graviti-store-{run_id}-{part_id}"


class _RayFuture:
    def __init__(self, ref):
        self.ref = ref

    def result(self):
        return ray_get(self.ref)


class RayStore:
    """A :class:`GraphStore` actor behind the :class:`graviti_dist.sampling.remote.StoreHandle` interface."""

    def __init__(self, actor):
        self.actor = actor

    def sample(self, nodes, fanout: int, with_rows: bool = False) -> _RayFuture:
        return _RayFuture(self.actor.sample.remote(nodes, fanout, with_rows))

    def gather(self, nodes) -> _RayFuture:
        return _RayFuture(self.actor.gather.remote(nodes))


def load_shared(part_dir: str, part_id: int, edge_inputs: bool = True) -> tuple[ray.ObjectRef, WorkerPartition]:
    """Partition ``part_id`` loaded, put in Ray's object store once, and rebuilt over that copy:
    returns the object's reference (keep it: the caller owns the object, and a store actor that Ray
    restarts reads it again) and the partition. The private copy is dropped and its memory handed
    back to the OS, so this node holds the partition once (measured: benchmarks/README.md).
    ``edge_inputs`` False (a model that reads none) leaves them out of the copy, so the stores
    built over it neither gather nor send them."""
    ref = ray.put(partition_arrays(load_worker_partition(part_dir, part_id, edge_inputs=edge_inputs)))
    release_free_memory()  # glibc keeps the freed copy's pages otherwise
    return ref, from_arrays(ray_get(ref))


def start_stores(part_dir: str, part_ids: list[int], run_id: str, shared: list[ray.ObjectRef] | None = None,
                 edge_inputs: bool = True) -> list:
    """Start the store actors of ``part_ids`` on this node; returns their handles (keep them: the
    caller owns the actors, which end with it). With ``shared`` (``load_shared``'s references,
    one per partition) a store reads the object store's copy of its partition; without, it loads
    its own from ``part_dir``, with edge inputs or without."""
    # Hard: with soft affinity Ray 2.60 put one of a worker's two stores on the other node of a
    # 2-node cluster (test_two_ray_nodes_serve_a_four_part_one_hop_set, 1 run in 3), where it read
    # the partition over the network. The worker runs on this node, so it exists; if it dies, the
    # worker dies with it and the run fails over as a whole (Ray Train's max_failures).
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(_StoreActor)
    sources = shared if shared is not None else [None] * len(part_ids)
    handles = [actor.options(name=store_name(run_id, p), num_cpus=0, max_concurrency=STORE_CONCURRENCY,
                             max_restarts=RESTARTS, max_task_retries=RESTARTS, scheduling_strategy=here)
               .remote(part_dir, p, source, edge_inputs) for p, source in zip(part_ids, sources)]
    ray_get([h.ready.remote() for h in handles])
    return handles


def store_nodes(handles: list, part_ids: list[int]) -> dict[int, str]:
    """Partition -> Ray node id of each of ``handles``' stores."""
    return dict(zip(part_ids, ray_get([h.node_id.remote() for h in handles])))


def stores_elsewhere(stores: dict[int, RayStore]) -> bool:
    """Whether any of ``stores`` runs on another Ray node than this process."""
    here = ray.get_runtime_context().get_node_id()
    return any(node != here for node in ray_get([s.actor.node_id.remote() for s in stores.values()]))


def connect_stores(num_parts: int, run_id: str) -> dict[int, RayStore]:
    """Every partition's store by name; a clear error naming the partitions whose store is missing."""
    stores, missing = {}, []
    for p in range(num_parts):
        try:
            stores[p] = RayStore(ray.get_actor(store_name(run_id, p)))
        except ValueError:
            missing.append(p)
    if missing:
        raise GravitiError(f"graph store: no store actor for partitions {missing} (run {run_id}); "
                           "every partition needs a training worker that serves it")
    return stores
