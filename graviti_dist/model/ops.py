"""Graph kernels in plain torch: edge softmax and attention-weighted aggregation.

Aggregation ``out[d] = sum_{e: dst(e)=d} a[e] * x[src(e)]`` runs as a
sparse CSR x dense matmul per head on strided views of the (N, heads, D)
features, written in place (MKL on CPU, cuSPARSE on GPU). Its backward is another CSR
matmul on the transposed block for ``x`` and a sampled dense-dense product
(SDDMM) for ``a``. Nothing of shape (E, heads, D) is ever built: measured here
on a 110k-edge block with 4x64 features, 21 ms forward instead of 217 ms for
gather + index_add.

Off the CPU, sparse products read and write contiguous tensors (writing into
strided views is only relied on with MKL). Which kernel family a device uses is
:func:`kernels_for`: on an H100 the gather kernels measured faster than cuSPARSE
(benchmarks/results/encoder-cuda.json).
"""

from __future__ import annotations

import os
import warnings

import torch

from graviti_dist.model.block import Block

# Our CSR tensors are valid by construction; torch's beta warnings are noise here.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled", category=UserWarning)


class _SegmentSoftmax(torch.autograd.Function):
    """Edge softmax over dst-sorted edges as segment reductions on the CSR row pointer: segment
    max/sum measured 2.5x/1.4x faster here than scatter_reduce/index_add, and the backward is
    one fused formula (grad_s = a * (g - sum_dst(a * g))) instead of autograd's chain."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, dst: torch.Tensor, indptr: torch.Tensor) -> torch.Tensor:
        peak = torch.segment_reduce(scores, "max", offsets=indptr, axis=0, unsafe=True)
        out = (scores - peak.index_select(0, dst)).exp_()
        total = torch.segment_reduce(out, "sum", offsets=indptr, axis=0, unsafe=True)
        out.div_(total.index_select(0, dst))
        ctx.save_for_backward(out, dst, indptr)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out, dst, indptr = ctx.saved_tensors
        weighted = grad * out
        per_dst = torch.segment_reduce(weighted, "sum", offsets=indptr, axis=0, unsafe=True)
        return weighted.sub_(out * per_dst.index_select(0, dst)), None, None


def edge_softmax(scores: torch.Tensor, dst: torch.Tensor, num_dst: int, indptr: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax of per-edge ``scores`` (E, H) over the in-edges of each destination; with the
    CSR row pointer ``indptr`` of dst-sorted edges, by segment reductions on the CPU."""
    if indptr is not None and scores.device.type == "cpu" and scores.shape[0] > 0:
        return _SegmentSoftmax.apply(scores, dst, indptr)
    heads = scores.shape[1]
    index = dst.unsqueeze(1).expand(-1, heads)
    peak = torch.full((num_dst, heads), float("-inf"), dtype=scores.dtype, device=scores.device)
    peak = peak.scatter_reduce(0, index, scores, reduce="amax", include_self=True)
    # Subtracting a detached per-destination max leaves the softmax and its gradient unchanged.
    exp = torch.exp(scores - peak.detach().gather(0, index))
    total = torch.zeros((num_dst, heads), dtype=scores.dtype, device=scores.device).index_add_(0, dst, exp)
    return exp / total.gather(0, index)


KERNELS_ENV = "GRAVITI_KERNELS"
KERNELS = ("sparse", "gather")


def kernels_for(device: torch.device) -> str:
    """``sparse`` (CSR matmuls, no (E, heads, D) tensor) or ``gather`` (index_select + index_add, what
    PyG does). ``GRAVITI_KERNELS`` overrides the per-device default."""
    chosen = os.environ.get(KERNELS_ENV, "auto")
    if chosen in KERNELS:
        return chosen
    if chosen != "auto":
        raise ValueError(f"{KERNELS_ENV}={chosen!r}: expected one of auto, sparse, gather")
    return DEFAULT_KERNELS.get(device.type, "gather")


# Per device type; CUDA's default is set from benchmarks/results/encoder-cuda.json.
DEFAULT_KERNELS = {"cpu": "sparse", "cuda": "gather"}


def _spmm_into(out: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
               dense: torch.Tensor) -> None:
    """out = CSR(indptr, indices, values) @ dense, written in place.

    ``addmm(beta=0, out=...)`` lets MKL write straight into a head's strided
    slice of the result: measured here 5x faster than one block-diagonal matmul
    over all heads, which spends its time on empty rows and a zero-filled output.
    Into a fresh tensor too, it saves ``matrix @ dense``'s zero fill and copy
    (~5 ms of a 32k x 64 gradient per step here).
    """
    matrix = torch.sparse_csr_tensor(indptr, indices, values, (out.shape[0], dense.shape[0]), check_invariants=False)
    if out.device.type != "cpu":  # strided ``out=`` is only relied on with MKL
        out.copy_(matrix @ dense.contiguous())
        return
    try:
        torch.addmm(out, matrix, dense, beta=0.0, out=out)
    except (RuntimeError, NotImplementedError):  # a backend without sparse addmm into a view
        out.copy_(matrix @ dense)


def _sddmm(block: Block, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Per edge e and head h: <left[dst(e), h], right[src(e), h]> (or right[src(e)] when ``right`` is 2-D).

    One sampled product over the block's CSR stacked once per head (rows
    ``h * num_dst + d``, so it is built by repetition, not by a scatter), with
    ``left`` in head-major order; the values come out as (heads, E). Measured
    here 2.1 ms against 3.1 ms for a row-per-(dst, head) pattern, whose layout
    needs a scatter to build and a gather to read back. The transposed view of
    ``right`` is what the kernel reads fastest.
    """
    heads, width = left.shape[1], left.shape[2]
    shared = right.dim() == 2
    num_edges, device = block.num_edges, left.device
    head = torch.arange(heads, device=device).unsqueeze(1)
    starts = (block.indptr[:-1].unsqueeze(0) + num_edges * head).reshape(-1)
    indptr = torch.cat([starts, starts.new_full((1,), num_edges * heads)])
    indices = (block.src.repeat(heads) if shared else (block.src.unsqueeze(0) * heads + head).reshape(-1))
    num_cols = block.num_src if shared else block.num_src * heads
    pattern = torch.sparse_csr_tensor(indptr, indices, left.new_zeros(indices.numel()),
                                      (block.num_dst * heads, num_cols), check_invariants=False)
    right_t = right.reshape(-1, width).t()
    if right.device.type != "cpu":
        right_t = right_t.contiguous()
    left_by_head = left.transpose(0, 1).reshape(-1, width)
    try:
        sampled = torch.sparse.sampled_addmm(pattern, left_by_head, right_t, beta=0.0)
    except (RuntimeError, NotImplementedError):  # a backend without this SDDMM: gather, at (E, heads, D) cost
        src = right.index_select(0, block.src)
        return (left.index_select(0, block.dst) * (src.unsqueeze(1) if shared else src)).sum(-1)
    return sampled.values().view(heads, num_edges).t().contiguous()


class _SharedAggregate(torch.autograd.Function):
    """Aggregation of one feature matrix shared by every head: (num_src, D) -> (num_dst, heads, D)."""

    @staticmethod
    def forward(ctx, attn: torch.Tensor, feat: torch.Tensor, block: Block) -> torch.Tensor:
        heads = attn.shape[1]
        ctx.block = block
        ctx.save_for_backward(attn, feat)
        values = attn.t().to(feat.dtype).contiguous()
        out = feat.new_empty((block.num_dst, heads, feat.shape[1]))
        for h in range(heads):
            _spmm_into(out[:, h], block.indptr, block.src, values[h], feat)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        attn, feat = ctx.saved_tensors
        block: Block = ctx.block
        heads = attn.shape[1]
        grad_out = grad_out.contiguous()
        grad_attn = grad_feat = None
        if ctx.needs_input_grad[1]:
            # grad_feat[s] = sum over heads and out-edges of attn * grad_out[dst]: one matmul with a
            # (num_src x num_dst*heads) matrix against grad_out seen as (num_dst*heads, D). Its row s
            # holds s's out-edges (transposed order) with their heads interleaved, so indices and
            # values are plain reshapes of per-edge tensors: nothing to scatter.
            head = torch.arange(heads, device=attn.device)
            indices = (block.t_dst.unsqueeze(1) * heads + head).reshape(-1)
            values = attn.index_select(0, block.t_perm).to(feat.dtype).reshape(-1)
            grad_feat = feat.new_empty((block.num_src, feat.shape[1]))
            _spmm_into(grad_feat, block.t_indptr * heads, indices, values, grad_out.view(-1, grad_out.shape[2]))
        if ctx.needs_input_grad[0]:
            grad_attn = _sddmm(block, grad_out, feat).to(attn.dtype)
        return grad_attn, grad_feat, None


class _AttentionAggregate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attn: torch.Tensor, feat: torch.Tensor, block: Block) -> torch.Tensor:
        _, heads, width = feat.shape
        ctx.block = block
        ctx.save_for_backward(attn, feat)
        values = attn.t().to(feat.dtype).contiguous()
        out = feat.new_empty((block.num_dst, heads, width))
        for h in range(heads):
            _spmm_into(out[:, h], block.indptr, block.src, values[h], feat[:, h])
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        attn, feat = ctx.saved_tensors
        block: Block = ctx.block
        num_src, heads, width = feat.shape
        grad_out = grad_out.contiguous()
        grad_attn = grad_feat = None
        if ctx.needs_input_grad[1]:
            values = attn[block.t_perm].t().to(feat.dtype).contiguous()
            grad_feat = feat.new_empty((num_src, heads, width))
            for h in range(heads):
                _spmm_into(grad_feat[:, h], block.t_indptr, block.t_dst, values[h], grad_out[:, h])
        if ctx.needs_input_grad[0]:
            grad_attn = _sddmm(block, grad_out, feat).to(attn.dtype)
        return grad_attn, grad_feat, None


class _HeadwiseLinear(torch.autograd.Function):
    """y[:, k] = x[:, k] @ w[k].T for each head k, as one matmul per head into strided slices.

    ``einsum`` runs this as a batched matmul over a permuted copy and returns a
    permuted (non-contiguous) result, so the next ``flatten`` copies it and its
    gradient reaches the aggregation backward non-contiguous (another copy).
    Here output and gradients are contiguous (nodes, heads, width) tensors.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        out = x.new_empty((x.shape[0], weight.shape[0], weight.shape[1]))
        for k in range(weight.shape[0]):
            torch.mm(x[:, k], weight[k].t(), out=out[:, k])
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x)
            for k in range(weight.shape[0]):
                torch.mm(grad[:, k], weight[k], out=grad_x[:, k])
        if ctx.needs_input_grad[1]:
            grad_w = torch.empty_like(weight)
            for k in range(weight.shape[0]):
                torch.mm(grad[:, k].t(), x[:, k], out=grad_w[k])
        return grad_x, grad_w


def headwise_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(N, heads, in) x (heads, out, in) -> (N, heads, out): each head's own linear map."""
    if x.device.type != "cpu" or x.shape[0] == 0:
        return torch.einsum("nhi,hdi->nhd", x, weight)
    return _HeadwiseLinear.apply(x.contiguous(), weight)


class _ELU(torch.autograd.Function):
    """ELU as relu(x) + (exp(min(x, 0)) - 1): torch's CPU ELU kernel measured 1.4x slower here
    than these passes together; the backward is torch's own, from the output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clamp(max=0).exp_().sub_(1).add_(x.clamp(min=0))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, out)


def elu(x: torch.Tensor) -> torch.Tensor:
    """``F.elu`` (alpha 1), faster on the CPU."""
    return _ELU.apply(x) if x.device.type == "cpu" else torch.nn.functional.elu(x)


def aggregate(attn: torch.Tensor, feat: torch.Tensor, block: Block) -> torch.Tensor:
    """Sum of ``attn[e, h] * feat[src(e), h]`` over the in-edges of each dst: (num_dst, heads, D).

    ``attn`` is (E, heads), ``feat`` is (num_src, heads, D) as a linear layer
    produces it; each head is handled through a strided view, never copied.
    """
    if block.num_edges == 0:
        return feat.new_zeros((block.num_dst,) + feat.shape[1:]) + 0 * feat.sum() + 0 * attn.sum()
    if kernels_for(feat.device) == "gather":
        return aggregate_reference(attn, feat, block)
    return _AttentionAggregate.apply(attn, feat, block)


def aggregate_shared(attn: torch.Tensor, feat: torch.Tensor, block: Block) -> torch.Tensor:
    """Like :func:`aggregate` for a (num_src, D) input shared by every head: (num_dst, heads, D).

    Lets a layer aggregate raw inputs first and project per head afterwards,
    which is far cheaper when a block has many more sources than destinations.
    """
    if block.num_edges == 0:
        return feat.new_zeros((block.num_dst, attn.shape[1], feat.shape[1])) + 0 * feat.sum() + 0 * attn.sum()
    if kernels_for(feat.device) == "gather":
        return aggregate_reference(attn, feat.unsqueeze(1), block)
    return _SharedAggregate.apply(attn, feat, block)


def aggregate_reference(attn: torch.Tensor, feat: torch.Tensor, block: Block) -> torch.Tensor:
    """The same as :func:`aggregate` by gather + index_add: the ``gather`` kernels, and the tests'
    reference. ``feat`` may be (num_src, 1, D) to share one input across heads."""
    messages = feat.index_select(0, block.src) * attn.unsqueeze(-1)
    return feat.new_zeros((block.num_dst,) + messages.shape[1:]).index_add_(0, block.dst, messages)
