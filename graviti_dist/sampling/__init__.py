"""Stage 3: a worker's partition -> neighbour-sampled minibatches of plain index tensors.

``worker_partition`` loads one partition (graph, features, labels, link edges);
``minibatches`` samples it with DGL into :class:`graviti_dist.model.MiniBatch`;
``stream`` feeds a worker's partitions to the model (sampling processes, device moves);
``remote`` samples past a shallow halo through a graph store per partition, which
``ray_store`` runs as Ray actors.
"""

from graviti_dist.runtime.faces import lazy_face
from graviti_dist.sampling.minibatches import NodeMinibatches
from graviti_dist.sampling.remote import GraphStore, LocalStore, NodeRanges, RemoteMinibatches
from graviti_dist.sampling.stream import MinibatchStream, on_device, prefetch, to_model
from graviti_dist.sampling.worker_partition import LinkEdges, WorkerPartition, load_worker_partition

__all__ = ["GraphStore", "LinkEdges", "LocalStore", "MinibatchStream", "NodeMinibatches", "NodeRanges",
           "RayStore", "RemoteMinibatches", "WorkerPartition", "connect_stores", "load_worker_partition", "on_device", "prefetch",
           "load_shared", "start_stores", "store_nodes", "stores_elsewhere", "to_model"]

# The Ray side of the store imports Ray: resolved on first use, so the worker loop and the
# benchmarks run where Ray is absent (GPU images) and only a remote-sampling worker pays for it.
__getattr__, _ = lazy_face(__name__, {"RayStore": "ray_store", "connect_stores": "ray_store", "start_stores": "ray_store",
                              "store_nodes": "ray_store", "load_shared": "ray_store",
                              "stores_elsewhere": "ray_store"})
