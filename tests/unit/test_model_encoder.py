"""The plain-torch GAT equals DGL's GATConv on real sampled blocks; typed extras behave; CUDA path."""

import pytest
import torch
import torch.nn.functional as F

from graviti_dist._dgl import dgl
from graviti_dist.crawl.load import load_crawl
from graviti_dist.partition.graph import build_graph
from graviti_dist.model import Block, EncoderConfig, GATLayer, NodeInputSpec, TypedFeatures, build_encoder
from graviti_dist.model.ops import KERNELS_ENV, aggregate, aggregate_reference, aggregate_shared, edge_softmax, elu, headwise_linear

GATConv = dgl.nn.GATConv


@pytest.fixture(scope="module")
def sampled_blocks(twitch_crawl):
    graph = build_graph(load_crawl(twitch_crawl))
    sampler = dgl.dataloading.NeighborSampler([10, 10])
    torch.manual_seed(0)
    _, _, blocks = sampler.sample_blocks(graph, torch.randperm(graph.num_nodes())[:256])
    return blocks


def _ours(block) -> Block:
    src, dst = block.edges()
    return Block.from_edges(src, dst, block.num_src_nodes(), block.num_dst_nodes())


def test_block_takes_dgls_transposed_csr_only_where_it_holds(sampled_blocks):
    for dgl_block in sampled_blocks:
        src, dst = dgl_block.edges()
        sizes = dgl_block.num_src_nodes(), dgl_block.num_dst_nodes()
        computed = Block.from_edges(src, dst, *sizes)
        handed = Block.from_edges(src, dst, *sizes, transposed=dgl_block.adj_tensors("csr"))
        assert torch.equal(handed.t_indptr, computed.t_indptr)
        # the same edges per source row (the order inside a row is free)
        for block in (handed, computed):
            assert torch.equal(block.src.index_select(0, block.t_perm).diff().clamp(max=0), torch.zeros(block.num_edges - 1, dtype=torch.long))
            assert torch.equal(block.dst.index_select(0, block.t_perm), block.t_dst)
        # shuffled edges need a sort, after which the handed-over positions would be wrong: recomputed
        order = torch.randperm(src.numel())
        shuffled = Block.from_edges(src[order], dst[order], *sizes, transposed=dgl_block.adj_tensors("csr"))
        assert torch.equal(shuffled.dst.index_select(0, shuffled.t_perm), shuffled.t_dst)
        assert torch.equal(shuffled.t_indptr, computed.t_indptr)


@pytest.mark.parametrize("aggregate_first", [True, False], ids=["aggregate-then-project", "project-then-aggregate"])
@pytest.mark.parametrize("in_dim, residual, layer_index", [(64, True, 0), (48, True, 0), (64, False, 1)])
def test_layer_matches_dgl_gatconv_forward_and_backward(sampled_blocks, in_dim, residual, layer_index, aggregate_first,
                                                        monkeypatch):
    torch.manual_seed(1)
    block = sampled_blocks[layer_index]
    heads, out = 4, 16
    reference = GATConv(in_dim, out, heads, residual=residual, allow_zero_in_degree=True)
    layer = GATLayer(in_dim, out, heads, residual=residual)
    monkeypatch.setattr(layer, "_aggregate_first", lambda *_: aggregate_first)
    with torch.no_grad():
        layer.fc.weight.copy_(reference.fc.weight)
        layer.attn_l.copy_(reference.attn_l)
        layer.attn_r.copy_(reference.attn_r)
        if isinstance(layer.res_fc, torch.nn.Linear):
            layer.res_fc.weight.copy_(reference.res_fc.weight)
            layer.res_fc.bias.copy_(reference.res_fc.bias)
        if layer.bias is not None:
            layer.bias.copy_(reference.bias)
            torch.nn.init.normal_(layer.bias)
            reference.bias.copy_(layer.bias)
    h = torch.randn(block.num_src_nodes(), in_dim)
    h_ref, h_ours = h.clone().requires_grad_(), h.clone().requires_grad_()
    expected, got = reference(block, h_ref), layer(_ours(block), h_ours)
    assert got.shape == expected.shape == (block.num_dst_nodes(), heads, out)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    got.backward(grad)
    torch.testing.assert_close(h_ours.grad, h_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.fc.weight.grad, reference.fc.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.attn_l.grad, reference.attn_l.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.attn_r.grad, reference.attn_r.grad, rtol=1e-4, atol=1e-4)


def test_cost_model_picks_aggregate_first_for_wide_outer_blocks(sampled_blocks):
    layer = GATLayer(64, 16, 4)
    outer = _ours(sampled_blocks[0])
    assert outer.num_src > 3 * outer.num_dst and layer._aggregate_first(outer, 64)
    few_sources = Block.from_edges(torch.arange(10).repeat(50), torch.arange(500) % 10, 10, 10)
    assert not layer._aggregate_first(few_sources, 64)


def test_shared_aggregation_equals_reference_with_gradients():
    torch.manual_seed(0)
    block = Block.from_edges(torch.randint(0, 40, (300,)), torch.randint(0, 15, (300,)), 40, 15)
    scores = torch.randn(300, 3, dtype=torch.float64, requires_grad=True)
    feat = torch.randn(40, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, x: aggregate_shared(edge_softmax(s, block.dst, 15), x, block), (scores, feat))
    torch.testing.assert_close(aggregate_shared(scores, feat, block),
                               aggregate_reference(scores, feat.unsqueeze(1).expand(-1, 3, -1), block))


def test_headwise_linear_equals_einsum_with_gradients():
    torch.manual_seed(0)
    x = torch.randn(7, 3, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    out = headwise_linear(x, weight)
    assert out.is_contiguous()
    torch.testing.assert_close(out, torch.einsum("nhi,hdi->nhd", x, weight))
    assert torch.autograd.gradcheck(headwise_linear, (x, weight))
    # a non-contiguous gradient (what a transpose downstream hands back) gives the same result
    grad = torch.randn(3, 7, 4, dtype=torch.float64).transpose(0, 1)
    got = torch.autograd.grad(headwise_linear(x, weight), (x, weight), grad)
    want = torch.autograd.grad(torch.einsum("nhi,hdi->nhd", x, weight), (x, weight), grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_elu_equals_torch_elu_with_gradients():
    x = torch.cat([torch.linspace(-30, 30, 601), torch.tensor([0.0, -1e-8, 1e-8])]).double().requires_grad_()
    torch.testing.assert_close(elu(x), F.elu(x))
    assert torch.autograd.gradcheck(elu, (x[x.abs() > 1e-3].detach().requires_grad_(),))
    grad = torch.randn_like(x)
    torch.testing.assert_close(torch.autograd.grad(elu(x), x, grad)[0], torch.autograd.grad(F.elu(x), x, grad)[0])


def test_sparse_aggregation_equals_gather_reference_with_gradients():
    torch.manual_seed(0)
    block = Block.from_edges(torch.randint(0, 40, (300,)), torch.randint(0, 15, (300,)), 40, 15)
    scores = torch.randn(300, 3, dtype=torch.float64, requires_grad=True)
    feat = torch.randn(40, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, x: aggregate(edge_softmax(s, block.dst, 15), x, block), (scores, feat))
    torch.testing.assert_close(aggregate(scores, feat, block), aggregate_reference(scores, feat, block))


def test_segment_softmax_equals_scatter_softmax_with_gradients():
    torch.manual_seed(0)
    block = Block.from_edges(torch.randint(0, 40, (300,)), torch.randint(0, 15, (300,)) * 2, 40, 30)
    assert (block.indptr.diff() == 0).any()  # destinations without in-edges (the odd ones) are covered
    scores = (torch.randn(300, 3, dtype=torch.float64) * 20).requires_grad_()
    fast = edge_softmax(scores, block.dst, 30, block.indptr)
    torch.testing.assert_close(fast, edge_softmax(scores, block.dst, 30))
    assert torch.autograd.gradcheck(lambda s: edge_softmax(s, block.dst, 30, block.indptr), (scores,))


def test_edge_softmax_sums_to_one_per_destination():
    dst = torch.tensor([0, 0, 0, 2, 2])
    attn = edge_softmax(torch.tensor([[1.0], [2.0], [3.0], [1000.0], [1000.0]]), dst, 3)
    assert torch.allclose(torch.zeros(3).index_add_(0, dst, attn[:, 0]), torch.tensor([1.0, 0.0, 1.0]))
    assert torch.allclose(attn[3:, 0], torch.tensor([0.5, 0.5]))  # no overflow with large scores


def _typed_inputs(n_user=30, n_post=20):
    node_type = torch.cat([torch.zeros(n_user, dtype=torch.long), torch.ones(n_post, dtype=torch.long)])
    perm = torch.randperm(n_user + n_post)
    node_type = node_type[perm]
    users, posts = (node_type == 0).nonzero().squeeze(1), (node_type == 1).nonzero().squeeze(1)
    features = TypedFeatures(
        node_type,
        positions={0: users, 1: posts},
        dense={0: torch.randn(n_user, 5)},
        categorical={0: [torch.randint(0, 4, (n_user,))]},
        multihot={0: [torch.tensor([[1, 7, -1]] * n_user)]},
    )
    specs = [NodeInputSpec(dense_width=5, categorical=(4,), multihot=(9,)), NodeInputSpec()]
    return features, specs


def _typed_blocks(num_in, num_rel=3):
    b1 = Block.from_edges(torch.randint(0, num_in, (200,)), torch.randint(0, 25, (200,)), num_in, 25,
                          etype=torch.randint(0, num_rel, (200,)), efeat=torch.randn(200, 2))
    b2 = Block.from_edges(torch.randint(0, 25, (60,)), torch.randint(0, 10, (60,)), 25, 10,
                          etype=torch.randint(0, num_rel, (60,)), efeat=torch.randn(60, 2))
    return [b1, b2]


@pytest.mark.parametrize("kind, gatv2", [("gat", False), ("gat", True), ("mlp", False)])
def test_typed_encoder_runs_and_learns_from_every_input(kind, gatv2):
    torch.manual_seed(0)
    features, specs = _typed_inputs()
    config = EncoderConfig(kind=kind, hidden=8, heads=2, layers=2, num_relations=3, edge_feat_dim=2, gatv2=gatv2, layer_norm=True)
    encoder = build_encoder(config, specs)
    emb = encoder(_typed_blocks(50), features)
    assert emb.shape == (10, 8)
    emb.pow(2).sum().backward()
    grads = {name: p.grad for name, p in encoder.named_parameters()}
    assert grads["project.types.1.free"] is not None  # featureless type has a learned embedding
    assert grads["project.types.0.multihot.0.weight"][[1, 7]].abs().sum() > 0
    assert grads["project.types.0.multihot.0.weight"][9].abs().sum() == 0  # padding row never learns
    if kind == "gat":
        assert grads["layers.0.rel_emb"].abs().sum() > 0 and grads["layers.0.edge_attn.weight"].abs().sum() > 0


def test_relation_type_changes_the_output():
    torch.manual_seed(0)
    features, specs = _typed_inputs()
    encoder = build_encoder(EncoderConfig(hidden=8, heads=2, num_relations=3), specs).eval()
    with torch.no_grad():
        for layer in encoder.layers:
            layer.rel_emb.normal_()
    blocks = _typed_blocks(50)
    a = encoder(blocks, features)
    for b in blocks:
        b.etype = (b.etype + 1) % 3
    assert not torch.allclose(a, encoder(blocks, features))


def _ops_case(device: str):
    torch.manual_seed(0)  # drawn on the CPU, then moved: CUDA's generator gives other numbers
    block = Block.from_edges(torch.randint(0, 400, (3000,)), torch.randint(0, 150, (3000,)), 400, 150).to(device)
    scores, feat, shared = (torch.randn(*shape).to(device).requires_grad_() for shape in ((3000, 4), (400, 4, 16), (400, 16)))
    return block, scores, feat, shared


def _ops_outputs(device: str):
    block, scores, feat, shared = _ops_case(device)
    results = []
    for fn, x in ((aggregate, feat), (aggregate_shared, shared)):
        out = fn(scores, x, block)
        weight = torch.linspace(-1, 1, out.numel(), device=device).reshape(out.shape)
        results += [out, *torch.autograd.grad((out * weight).sum(), (scores, x))]
    return [r.detach().cpu() for r in results]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("kernels", ["sparse", "gather"])
def test_each_kernel_family_equals_the_cpu_sparse_kernels(kernels, device, monkeypatch):
    """Forward and backward of both kernel families (gather is CUDA's default) on each device."""
    monkeypatch.setenv(KERNELS_ENV, "sparse")
    expected = _ops_outputs("cpu")
    monkeypatch.setenv(KERNELS_ENV, kernels)
    tolerance = 1e-4 if device == "cpu" else 1e-3
    for got, want in zip(_ops_outputs(device), expected):
        torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["sparse", "gather"])
def test_encoder_runs_unchanged_on_cuda(kernels, monkeypatch):
    monkeypatch.setenv(KERNELS_ENV, kernels)
    torch.manual_seed(0)
    features, specs = _typed_inputs()
    encoder = build_encoder(EncoderConfig(hidden=8, heads=2, num_relations=3, edge_feat_dim=2), specs).eval()
    blocks = _typed_blocks(50)  # eval(): dropout masks come from different generators on each device
    cpu = encoder(blocks, features)
    gpu = encoder.cuda()([b.to("cuda") for b in blocks], features.to("cuda"))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
    gpu.sum().backward()
    assert all(p.grad is None or p.grad.is_cuda for p in encoder.parameters())


def test_kernels_fall_back_where_a_backend_lacks_sparse_ops(monkeypatch):
    """Other devices may lack SDDMM or sparse addmm into a view: the layer must still be right."""
    torch.manual_seed(0)
    block = Block.from_edges(torch.randint(0, 40, (300,)), torch.randint(0, 15, (300,)), 40, 15)
    scores = torch.randn(300, 3, dtype=torch.float64, requires_grad=True)
    feat = torch.randn(40, 3, 5, dtype=torch.float64, requires_grad=True)
    shared = torch.randn(40, 5, dtype=torch.float64, requires_grad=True)
    expected = [torch.autograd.grad(f(scores, x, block).pow(2).sum(), (scores, x))
                for f, x in ((aggregate, feat), (aggregate_shared, shared))]

    def unsupported(*args, **kwargs):
        raise NotImplementedError("not on this backend")

    monkeypatch.setattr(torch.sparse, "sampled_addmm", unsupported)
    monkeypatch.setattr(torch, "addmm", unsupported)
    for (f, x), want in zip(((aggregate, feat), (aggregate_shared, shared)), expected):
        got = torch.autograd.grad(f(scores, x, block).pow(2).sum(), (scores, x))
        torch.testing.assert_close(got, want)


def test_categorical_lookup_equals_torch_embedding_with_gradients():
    from graviti_dist.model.inputs import _Lookup

    torch.manual_seed(0)
    table = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    codes = torch.randint(0, 6, (50,))
    torch.testing.assert_close(_Lookup.apply(table, codes), F.embedding(codes, table))
    grad = torch.randn(50, 4, dtype=torch.float64)
    got = torch.autograd.grad(_Lookup.apply(table, codes), table, grad)[0]
    torch.testing.assert_close(got, torch.autograd.grad(F.embedding(codes, table), table, grad)[0])


@pytest.mark.parametrize("kind", ["gat", "mlp"])
def test_structural_columns_are_read_only_when_the_encoder_asks(kind):
    """Two trailing dense columns of the users are structural (log degrees): an encoder without
    structural inputs must not change when they do; one with them must."""
    torch.manual_seed(0)
    features, specs = _typed_inputs()
    features.dense[0] = torch.cat([features.dense[0], torch.randn(30, 2)], 1)
    specs[0] = NodeInputSpec(dense_width=7, categorical=(4,), multihot=(9,), structural_width=2)
    blocks = _typed_blocks(50)
    changed = TypedFeatures(features.node_type, features.positions, {0: features.dense[0].clone()},
                            features.categorical, features.multihot)
    changed.dense[0][:, -2:] = torch.randn(30, 2) * 5
    for structural, width in ((False, 5), (True, 7)):
        encoder = build_encoder(EncoderConfig(kind=kind, hidden=8, heads=2, structural_inputs=structural), specs).eval()
        assert encoder.project.types[0].dense.in_features == width
        with torch.no_grad():
            same = torch.equal(encoder(blocks, features), encoder(blocks, changed))
        assert same is not structural
