"""TCGL's pieces against the reference code's semantics: STKD = DCT high-pass, the graphs for all 6 orders,
the dense batched GCN against PyG-style message passing over edge lists, one sample at a time."""
import math

import pytest
import torch

from avcl.data.views import permutations
from avcl.methods.tcgl import (DenseGCN, dct_matrix, drop_edges, inter_snippet_adjacency, intra_snippet_adjacency,
                               normalise_adjacency, stkd)

g = torch.Generator().manual_seed(0)


def test_stkd_demean_is_the_dct_highpass():
    x = torch.randn(2, 3, 16, 5, 5, generator=g, dtype=torch.float64)
    d = dct_matrix(16).double()
    torch.testing.assert_close(d @ d.t(), torch.eye(16, dtype=torch.float64), atol=1e-6, rtol=0)  # orthonormal
    dc = torch.einsum("t,mcthw->mchw", d[0], x)
    torch.testing.assert_close(dc, math.sqrt(16) * x.mean(2), atol=1e-5, rtol=1e-5)  # X_0 = √T · mean
    demeaned = stkd(x.float(), "temporal_demean")
    torch.testing.assert_close(stkd(x.float(), "dct_highpass"), demeaned, atol=1e-5, rtol=1e-5)
    assert demeaned.mean(2).abs().max() < 1e-5
    assert torch.equal(stkd(x, "none"), x)


# docs/methods.md §1.7: edges in shuffled-position coordinates, per order
EXPECTED_INTER_EDGES = {(0, 1, 2): {(0, 1), (1, 2)}, (2, 1, 0): {(0, 1), (1, 2)}, (0, 2, 1): {(0, 2), (1, 2)},
                        (1, 0, 2): {(0, 1), (0, 2)}, (1, 2, 0): {(0, 1), (0, 2)}, (2, 0, 1): {(1, 2), (0, 2)}}


def test_inter_snippet_graphs_for_all_six_orders():
    adjacency = inter_snippet_adjacency(3)
    assert permutations(3) == [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]  # the label order
    for label, order in enumerate(permutations(3)):
        a = adjacency[label]
        assert torch.equal(a, a.t())
        edges = {(i, j) for i in range(3) for j in range(i + 1, 3) if a[i, j]}
        assert edges == EXPECTED_INTER_EDGES[order], order


def test_intra_snippet_graph_is_a_chain():
    chain = intra_snippet_adjacency(4, "chain")
    assert {(i, j) for i in range(4) for j in range(4) if chain[i, j]} == {(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)}
    assert intra_snippet_adjacency(4, "full").sum() == 12


def gcn_by_message_passing(x, edges, weight, bias):
    """PyG GCNConv for one graph: self-loops, in-degree normalisation, messages source -> target, summed."""
    n = len(x)
    edges = edges + [(i, i) for i in range(n)]
    degree = [sum(1 for _, target in edges if target == i) for i in range(n)]
    h = x @ weight
    out = torch.zeros_like(h)
    for source, target in edges:
        out[target] += h[source] / math.sqrt(degree[source] * degree[target])
    return out + bias


def test_dense_batched_gcn_equals_message_passing_with_dropped_edges():
    torch.manual_seed(1)
    b, p, n, c = 5, 3, 4, 6
    x = torch.randn(b, p, n, c, dtype=torch.float64)
    adjacency = drop_edges(intra_snippet_adjacency(n, "chain").double().expand(b, p, n, n), 0.3, (b, p, n, n))
    assert not torch.equal(adjacency, adjacency.transpose(-1, -2))  # some edges dropped one way only
    gcn = DenseGCN(p, c).double()
    dense = gcn(x, normalise_adjacency(adjacency))
    for i in range(b):
        for pos in range(p):
            edges = [(int(s), int(t)) for t, s in adjacency[i, pos].nonzero()]  # rows are targets
            expected = gcn_by_message_passing(x[i, pos], edges, gcn.weight[pos], gcn.bias[pos])
            torch.testing.assert_close(dense[i, pos], expected)


@pytest.mark.parametrize("p", [0.0, 0.2, 1.0])
def test_edge_drop_rate(p):
    a = torch.ones(2000, 4, 4)
    kept = drop_edges(a, p, a.shape).mean().item()
    assert kept == pytest.approx(1 - p, abs=0.02)
