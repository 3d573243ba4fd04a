"""Sampled message-flow blocks as plain index tensors.

A block maps ``num_src`` input nodes to ``num_dst`` output nodes; the first
``num_dst`` input nodes are the output nodes (DGL's block convention). Edges
are kept sorted by destination with a CSR row pointer, plus the transposed
CSR, so aggregation is a sparse-dense matmul in both directions of autograd
(no per-edge feature tensor is ever built). Building the sort happens once per
block in the data loader, off the model's critical path.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


def _indptr(sorted_rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    counts = torch.bincount(sorted_rows, minlength=num_rows)
    indptr = torch.zeros(num_rows + 1, dtype=torch.int64, device=sorted_rows.device)
    torch.cumsum(counts, 0, out=indptr[1:])
    return indptr


@dataclass
class Block:
    """One layer's bipartite graph. Build with :meth:`from_edges`."""

    src: torch.Tensor  # (E,) input-node index per edge, edges sorted by dst
    dst: torch.Tensor  # (E,) output-node index per edge, non-decreasing
    indptr: torch.Tensor  # (num_dst + 1,) CSR rows over dst
    t_indptr: torch.Tensor  # (num_src + 1,) CSR rows of the transpose (over src)
    t_dst: torch.Tensor  # (E,) dst per edge in src-sorted order
    t_perm: torch.Tensor  # (E,) edge position (in dst order) of each src-sorted edge
    num_src: int
    num_dst: int
    etype: torch.Tensor | None = None  # (E,) relation id per edge
    efeat: torch.Tensor | None = None  # (E, F) float edge features (already normalised)

    @classmethod
    def from_edges(
        cls,
        src: torch.Tensor,
        dst: torch.Tensor,
        num_src: int,
        num_dst: int,
        etype: torch.Tensor | None = None,
        efeat: torch.Tensor | None = None,
        transposed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> "Block":
        """Sort edges by destination and precompute both CSR layouts.

        ``transposed`` may hand over the source-major CSR (indptr, dst, edge position) of
        these edges when the caller has it (DGL's sampled blocks carry one); it is used
        only when the edges need no re-sort, i.e. when the positions still hold.
        """
        if num_dst > num_src:
            raise ValueError(f"a block's dst nodes are its first src nodes: num_dst={num_dst} > num_src={num_src}")
        src, dst = src.long(), dst.long()
        etype = None if etype is None else etype.long()
        efeat = None if efeat is None else efeat.float()
        # DGL's sampled blocks come grouped by destination already: the sort is then skipped.
        if dst.numel() > 1 and not bool((dst[1:] >= dst[:-1]).all()):
            order = torch.argsort(dst, stable=True)
            src, dst = src.index_select(0, order), dst.index_select(0, order)
            etype = None if etype is None else etype.index_select(0, order)
            efeat = None if efeat is None else efeat.index_select(0, order)
            transposed = None
        if transposed is None:
            t_perm = torch.argsort(src, stable=True)
            t_indptr, t_dst = _indptr(src.index_select(0, t_perm), num_src), dst.index_select(0, t_perm)
        else:
            t_indptr, t_dst, t_perm = (t.long() for t in transposed)
        return cls(src, dst, _indptr(dst, num_dst), t_indptr, t_dst, t_perm, int(num_src), int(num_dst), etype, efeat)

    @property
    def num_edges(self) -> int:
        return int(self.src.numel())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Block":
        return self.apply(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Block":
        return self.apply(torch.Tensor.pin_memory)

    def apply(self, move) -> "Block":
        """A copy with ``move`` applied to every tensor field."""
        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})
