"""Minibatches of one partition: DGL samples, plain tensors come out.

Seeds mix every node task (a seed carries whichever labels it has); blocks become
:class:`graviti_dist.model.Block` index tensors with relation ids, and input
features are grouped per node type as :class:`TypedFeatures`.

Link tasks add, per step, ``link_pairs`` of their edges whose source the
partition owns, each with ``negatives`` destinations drawn uniformly from the
partition's nodes of the destination type; their nodes join the seeds.
Edges carry the set's edge inputs (``WorkerPartition.edge_inputs``: age and weight, halo edges
included) where it has them.
"""

from __future__ import annotations

from typing import Iterator

import torch

from graviti_dist._dgl import dgl
from graviti_dist.model import Block, LinkPairs, MiniBatch, TypedFeatures
from graviti_dist.sampling.worker_partition import WorkerPartition, load_worker_partition


class NodeMinibatches:
    """Shuffled minibatches of seeds that hold a label for some node task in ``split``.

    Dense features come standardised from the partition (:attr:`WorkerPartition.dense`).
    """

    def __init__(self, part: WorkerPartition, fanouts: list[int], batch_size: int, split: str = "train",
                 seed: int = 0, shuffle: bool = True, tasks: list[str] | None = None, link_pairs: int = 128,
                 negatives: int = 5):
        self.part, self.batch_size, self.split, self.shuffle = part, batch_size, split, shuffle
        self._recipe = dict(fanouts=list(fanouts), batch_size=batch_size, split=split, seed=seed, shuffle=shuffle,
                            tasks=tasks, link_pairs=link_pairs, negatives=negatives)
        self.sampler = dgl.dataloading.NeighborSampler(list(fanouts))
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.tasks = [t for t in part.manifest.node_tasks if tasks is None or t.name in tasks]
        split_id = {"train": 0, "val": 1, "test": 2}[split]
        # link task -> (edge positions of this split); each step adds ``link_pairs`` of them with ``negatives`` each
        self.links = {name: torch.nonzero(edges.split == split_id).squeeze(1) for name, edges in part.links.items()
                      if tasks is None or name in tasks}
        self.link_pairs, self.negatives = link_pairs, negatives
        type_id = {name: i for i, name in enumerate(part.ntypes)}
        eligible = torch.zeros(part.graph.num_nodes(), dtype=torch.bool)
        for task in self.tasks:
            t = type_id[task.node_type]
            local = torch.nonzero(part.inner & (part.node_type == t)).squeeze(1)
            eligible[local] |= part.tables[t][f"{split}_{task.name}"][part.row[local]]
        self.seeds = torch.nonzero(eligible).squeeze(1)
        self.type_id = type_id

    def __reduce__(self):
        # Sampling processes load the partition from disk rather than receive it pickled: no copy of
        # a large partition through a pipe (and torch cannot share its empty tensors that way).
        if self.part.source is None:
            raise TypeError("minibatches over a partition not loaded from disk cannot go to sampling processes")
        return _rebuild_minibatches, (self.part.source, self._recipe)

    def __len__(self) -> int:
        """Steps per pass: enough for every node seed (link edges cycle alongside while training); when
        evaluating, or with no node seeds, also enough for every link edge."""
        node_steps = -(-self.seeds.numel() // self.batch_size)
        link_steps = max((-(-e.numel() // self.link_pairs) for e in self.links.values()), default=0)
        if self.shuffle and node_steps:
            return node_steps
        return max(node_steps, link_steps)

    def __iter__(self) -> Iterator[MiniBatch]:
        for seeds, links in self.plan():
            yield self.batch(seeds, links)

    def plan(self) -> Iterator[tuple[torch.Tensor, dict]]:
        """One pass's steps as (node seeds, link triples): cheap index work, so it can run in the
        training process while the sampling itself runs elsewhere (:class:`MinibatchStream`)."""
        if not self.shuffle:  # evaluation: the same negatives every pass
            self.generator.manual_seed(self.seed)
        order = self.seeds[torch.randperm(self.seeds.numel(), generator=self.generator)] if self.shuffle else self.seeds
        link_order = {name: e[torch.randperm(e.numel(), generator=self.generator)] if self.shuffle else e
                      for name, e in self.links.items()}
        for step in range(len(self)):
            yield order[step * self.batch_size:(step + 1) * self.batch_size], self.link_batch(link_order, step)

    def link_batch(self, link_order: dict[str, torch.Tensor], step: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Step ``step``'s (src, pos, neg) local ids per link task, cycling through each task's edges."""
        out = {}
        for name, positions in link_order.items():
            if positions.numel() == 0:
                continue
            edges = self.part.links[name]
            pick = positions[torch.arange(step * self.link_pairs, (step + 1) * self.link_pairs) % positions.numel()]
            if not self.shuffle:  # evaluation: each edge once
                pick = positions[step * self.link_pairs:(step + 1) * self.link_pairs]
                if pick.numel() == 0:
                    continue
            # Evaluation ranks each of a step's edges against the same negatives: every negative node
            # costs a 2-hop neighbourhood, and 128 edges x 50 negatives of their own made a validation
            # pass sample ~14x the nodes of a training epoch (synthetic crawl, 10k users).
            rows = pick.numel() if self.shuffle else 1
            draw = torch.randint(edges.candidates.numel(), (rows, self.negatives), generator=self.generator)
            out[name] = (edges.src[pick], edges.dst[pick], edges.candidates[draw].expand(pick.numel(), -1))
        return out

    def batch(self, seeds: torch.Tensor, links: dict | None = None) -> MiniBatch:
        """Sample the neighbourhood of ``seeds`` (local node ids) and of the link pairs' nodes into a MiniBatch."""
        if not links:
            return self.gather(seeds, *self.sample(seeds))
        pieces = [seeds] + [t.reshape(-1) for triple in links.values() for t in triple]
        nodes, inverse = torch.unique(torch.cat(pieces), return_inverse=True)
        node_seed = torch.zeros(nodes.numel(), dtype=torch.bool)
        node_seed[inverse[:seeds.numel()]] = True  # node-task labels count only for the node seeds drawn
        pairs, offset = {}, seeds.numel()
        for name, (src, pos, neg) in links.items():
            p, k = src.numel(), neg.shape[1]
            pairs[name] = LinkPairs(inverse[offset:offset + p], inverse[offset + p:offset + 2 * p],
                                    inverse[offset + 2 * p:offset + 2 * p + p * k].view(p, k))
            offset += 2 * p + p * k
        return self.gather(nodes, *self.sample(nodes), node_seed=node_seed, links=pairs)

    def sample(self, seeds: torch.Tensor) -> tuple[torch.Tensor, list[Block]]:
        """DGL's neighbour sampling of ``seeds``: (input nodes, blocks as index tensors with relation ids)."""
        part = self.part
        input_nodes, _, dgl_blocks = self.sampler.sample_blocks(part.graph, seeds)
        etype, edge_inputs = part.graph.edata[dgl.ETYPE], part.edge_inputs
        blocks = []
        for b in dgl_blocks:
            eid = b.edata[dgl.EID]
            efeat = None if edge_inputs is None else edge_inputs.index_select(0, eid)
            # DGL's sampler has built each block's source-major CSR already (edge ids = COO positions):
            # taking it saves an argsort per block.
            blocks.append(Block.from_edges(*b.edges(), b.num_src_nodes(), b.num_dst_nodes(), etype=etype.index_select(0, eid),
                                           efeat=efeat, transposed=b.adj_tensors("csr")))
        return input_nodes, blocks

    def gather(self, seeds: torch.Tensor, input_nodes: torch.Tensor, blocks: list[Block],
               node_seed: torch.Tensor | None = None, links: dict[str, LinkPairs] | None = None) -> MiniBatch:
        """Features of ``input_nodes`` and labels of ``seeds`` around sampled ``blocks``; ``node_seed``
        limits node-task labels to some seeds (the rest are link-pair nodes)."""
        part = self.part
        features = self.features(input_nodes)
        seed_type = part.node_type[seeds]
        labels = {}
        for task in self.tasks:
            t = self.type_id[task.node_type]
            of_type = seed_type == t
            rows = torch.where(of_type, part.row[seeds], 0)  # other types' seeds read row 0 and are masked out
            table = part.tables[t]
            target = table[f"label_{task.name}"][rows]
            mask = of_type & table[f"{self.split}_{task.name}"][rows]
            if node_seed is not None:
                mask &= node_seed
            labels[task.name] = (target, mask)
        return MiniBatch(blocks, features, seed_type, labels, links or {})

    def features(self, input_nodes: torch.Tensor) -> TypedFeatures:
        """Standardised input features of local nodes ``input_nodes``, grouped by type."""
        return self.features_of(self.part, input_nodes)

    @staticmethod
    def features_of(part: WorkerPartition, input_nodes: torch.Tensor) -> TypedFeatures:
        """Standardised input features of ``part``'s local nodes ``input_nodes``, grouped by type."""
        node_type = part.node_type[input_nodes]
        features = TypedFeatures(node_type)
        for t in range(len(part.ntypes)):
            positions = torch.nonzero(node_type == t).squeeze(1)
            if positions.numel() == 0:
                continue
            rows = part.row.index_select(0, input_nodes.index_select(0, positions))
            features.positions[t] = positions
            if part.dense[t] is not None:
                features.dense[t] = part.dense[t].index_select(0, rows)
            columns = part.tables[t]
            features.categorical[t] = [columns[k].index_select(0, rows).long().reshape(-1) for k in part.feature_keys[t]["categorical"]]
            features.multihot[t] = [columns[k].index_select(0, rows).long() for k in part.feature_keys[t]["multihot"]]
        return features


def _rebuild_minibatches(source: tuple[str, int], recipe: dict) -> "NodeMinibatches":
    return NodeMinibatches(load_worker_partition(*source), **recipe)
