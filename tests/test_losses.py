"""Each shared loss against a slow, obviously-correct loop on random inputs; gathering across two gloo ranks."""
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from avcl.methods import losses

g = torch.Generator().manual_seed(0)


def unit(*shape):
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def test_info_nce_and_symmetric_form():
    q, k, tau = unit(6, 8), unit(6, 8), 0.2
    terms = []
    for i in range(6):
        logits = [float(q[i] @ k[j]) / tau for j in range(6)]
        terms.append(-logits[i] + math.log(sum(math.exp(x) for x in logits)))
    loss, _ = losses.info_nce(q, k, tau)
    assert loss.item() == pytest.approx(sum(terms) / 6, rel=1e-6)
    symmetric, _ = losses.symmetric_info_nce(q, k, tau)
    assert symmetric.item() == pytest.approx((loss + losses.info_nce(k, q, tau)[0]).item() / 2, rel=1e-6)


def test_nt_xent():
    z1, z2, tau = unit(5, 8), unit(5, 8), 0.1
    z = torch.cat([z1, z2])
    terms = []
    for i in range(10):
        positive = (i + 5) % 10
        denominator = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(10) if j != i)
        terms.append(-float(z[i] @ z[positive]) / tau + math.log(denominator))
    assert losses.nt_xent(z1, z2, tau)[0].item() == pytest.approx(sum(terms) / 10, rel=1e-6)


def test_multi_positive_nce_skips_rows_without_positives():
    logits = torch.randn(5, 9, generator=g, dtype=torch.float64)
    positive = torch.rand(5, 9, generator=g) < 0.3
    positive[2] = False
    candidate = positive | (torch.rand(5, 9, generator=g) < 0.6)
    terms = []
    for i in range(5):
        if not positive[i].any():
            continue
        numerator = sum(math.exp(logits[i, j]) for j in range(9) if positive[i, j])
        denominator = sum(math.exp(logits[i, j]) for j in range(9) if candidate[i, j])
        terms.append(-math.log(numerator / denominator))
    assert losses.multi_positive_nce(logits, positive, candidate).item() == pytest.approx(sum(terms) / len(terms))


def test_grace_loss():
    u, v, tau = torch.randn(3, 4, 6, generator=g, dtype=torch.float64), torch.randn(3, 4, 6, generator=g, dtype=torch.float64), 0.5
    cos = lambda a, b: float(F.cosine_similarity(a, b, dim=0))  # noqa: E731

    def ell(a, b, i):
        numerator = math.exp(cos(a[i], b[i]) / tau)
        denominator = sum(math.exp(cos(a[i], b[k]) / tau) for k in range(4))
        denominator += sum(math.exp(cos(a[i], a[k]) / tau) for k in range(4) if k != i)
        return -math.log(numerator / denominator)

    expected = [sum(ell(u[gr], v[gr], i) + ell(v[gr], u[gr], i) for i in range(4)) / 8 for gr in range(3)]
    torch.testing.assert_close(losses.grace_loss(u, v, tau).double(), torch.tensor(expected, dtype=torch.float64))


def test_cocorrelation_and_guided_alignment():
    a, b, lam, eps = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randn(16, 5, generator=g, dtype=torch.float64), 5e-3, 1e-5

    def standardise(x):
        return [[(x[n, d] - x[:, d].mean()) / math.sqrt(x[:, d].var(unbiased=False) + eps) for d in range(5)] for n in range(16)]

    sa, sb = standardise(a), standardise(b)
    c = [[sum(sa[n][i] * sb[n][j] for n in range(16)) / 16 for j in range(5)] for i in range(5)]
    expected = sum((1 - c[i][i]) ** 2 for i in range(5)) + lam * sum(c[i][j] ** 2 for i in range(5) for j in range(5) if i != j)
    assert losses.cocorrelation_loss(a, b, lam).item() == pytest.approx(float(expected), rel=1e-5)
    corr = [sum(sa[n][d] * sb[n][d] for d in range(5)) / 5 / 0.1 for n in range(16)]
    weights = [math.exp(x) / sum(math.exp(y) for y in corr) for x in corr]
    guided = sum(w * sum((sa[n][d] - sb[n][d]) ** 2 for d in range(5)) for n, w in enumerate(weights))
    assert losses.guided_alignment(a, b, 0.1).item() == pytest.approx(float(guided), rel=1e-5)


# ---- two gloo ranks give the single-process numbers --------------------------------------------------------

GATHERED = {"info_nce": lambda a, b: losses.symmetric_info_nce(a, b, 0.1)[0],
            "nt_xent": lambda a, b: losses.nt_xent(a, b, 0.1)[0],
            "cocorrelation": lambda a, b: losses.cocorrelation_loss(a, b, 5e-3)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, q, k, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    half = len(q) // 2
    mine = slice(rank * half, (rank + 1) * half)
    q_r, k_r = q[mine].clone().requires_grad_(), k[mine].clone().requires_grad_()
    results = {}
    for name, fn in GATHERED.items():
        q_r.grad = k_r.grad = None
        loss = fn(q_r, k_r)
        loss.backward()
        results[name] = (loss.item(), q_r.grad.numpy().copy(), k_r.grad.numpy().copy())  # by value: the child exits
    out.put((rank, results))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_match_one_process():
    """Mean of the ranks' losses = the global-batch loss; each rank's input gradient (× ½, DDP's averaging) = the
    single process's gradient for those rows: negatives and batch statistics really span the global batch."""
    q, k = unit(8, 6).float(), unit(8, 6).float()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, q, k, out)) for r in range(2)]
    for p in procs:
        p.start()
    ranked = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    for name, fn in GATHERED.items():
        q1, k1 = q.clone().requires_grad_(), k.clone().requires_grad_()
        loss = fn(q1, k1)
        loss.backward()
        if name != "cocorrelation":  # a mean over rows: ranks hold halves
            assert (ranked[0][name][0] + ranked[1][name][0]) / 2 == pytest.approx(loss.item(), rel=1e-5)
        else:  # computed on the gathered batch: every rank holds the global value
            assert ranked[0][name][0] == pytest.approx(loss.item(), rel=1e-5)
        grad_q = torch.cat([torch.from_numpy(ranked[r][name][1]) for r in range(2)])
        grad_k = torch.cat([torch.from_numpy(ranked[r][name][2]) for r in range(2)])
        torch.testing.assert_close(grad_q / 2, q1.grad, rtol=1e-4, atol=1e-6)  # DDP averages the ranks' gradients
        torch.testing.assert_close(grad_k / 2, k1.grad, rtol=1e-4, atol=1e-6)
