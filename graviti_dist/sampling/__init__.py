"""Stage 3: a worker's partition -> neighbour-sampled minibatches of plain index tensors.

``worker_partition`` loads one partition (graph, features, labels, link edges);
``minibatches`` samples it with DGL into :class:`graviti_dist.model.MiniBatch`;
``stream`` feeds a worker's partitions to the model (sampling processes, device moves).
"""

from graviti_dist.sampling.minibatches import NodeMinibatches
from graviti_dist.sampling.stream import MinibatchStream, on_device, prefetch, to_model
from graviti_dist.sampling.worker_partition import LinkEdges, WorkerPartition, load_worker_partition

__all__ = ["LinkEdges", "MinibatchStream", "NodeMinibatches", "WorkerPartition", "load_worker_partition", "on_device",
           "prefetch", "to_model"]
