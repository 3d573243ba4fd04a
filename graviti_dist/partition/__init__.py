"""Stage 2: a crawl -> splits -> METIS parts -> halos -> a DGL-format partition set on disk.

The set's files and its typed :class:`Manifest` belong to ``layout``; ``build`` orchestrates
the stages (``read`` on Ray, ``splits``, ``graph``, ``halo``, ``write``); ``check`` verifies a
set against its crawl. Names resolve on first use (``runtime.faces``): Ray's reader workers
import ``partition.read`` without torch or DGL.
"""

from graviti_dist.runtime.faces import lazy_face

__all__ = ["DEGREE", "EDGE_INPUTS", "EdgeInputInfo", "FeatureInfo", "Manifest", "StructuralInfo", "PartitionSet", "PartitionSpec", "TaskInfo", "check_partitions", "partition_crawl",
           "build_graph", "read_manifest", "resolve_executor"]
__getattr__, __dir__ = lazy_face(__name__, {
    "DEGREE": "layout", "EDGE_INPUTS": "layout", "EdgeInputInfo": "layout", "StructuralInfo": "layout", "FeatureInfo": "layout", "Manifest": "layout", "PartitionSet": "layout", "PartitionSpec": "layout", "TaskInfo": "layout",
    "read_manifest": "layout", "partition_crawl": "build", "resolve_executor": "build", "check_partitions": "check",
    "build_graph": "graph",
})
