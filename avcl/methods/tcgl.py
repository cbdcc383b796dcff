"""TCGL: temporal contrastive graphs over snippets and frame-sets, with adaptive snippet order prediction.

Liu, Wang, Liu, Lan & Lin, "TCGL: Temporal Contrastive Graph for Self-Supervised Video Representation
Learning" (IEEE TIP 2022), as implemented in github.com/YangLiu9208/TCGL @ ceae87c (docs/methods.md §1):

1. Each sample is S = 3 snippets of 16 consecutive frames at the video's own rate (build the data with `--fps
   native`), 8 frames apart, in shuffled order (the permutation's index is the label). Videos shorter than 64
   frames are skipped and counted, as the official VCOP split lists leave them out: repeated frames would
   become all-zero inputs after STKD and give the order away.
2. STKD: every backbone input has its temporal mean removed (= zeroing the DCT-II DC coefficient along time).
3. One shared backbone embeds the S snippets (nodes c_s) and their 4-frame frame-sets (nodes e_s,j).
4. Intra-snippet graphs: frame-set nodes on a chain, one GCN per shuffled position; inter-snippet graph: snippet
   nodes joined where the snippets are adjacent in the original video (so it knows the true order).
5. View 2 of each graph drops edges (0.2) and masks feature columns (0.1); view 1 stays clean. GRACE loss per
   graph with only within-graph negatives (τ = 0.5) through one shared ELU projector.
6. ASOP: SE-style gates recalibrate the view-1 snippet nodes, an MLP predicts the order.
Loss = intra + inter + CE(order). Graphs are dense [B, N, N] matrices and every step is batched; the
reference code's per-sample loop survives only in the tests, which check that both give the same numbers.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from avcl.data.views import ViewSpec, permutations
from avcl.methods.base import EncoderConfig, Method, build_encoders, detached, flat, register
from avcl.methods.losses import accuracy, grace_loss


@dataclasses.dataclass
class TCGLConfig(EncoderConfig):
    video_backbone: str = "r3d_10"  # VCOP's (1,1,1,1) R3D; c3d, r2plus1d_vcop, r3d_18, r3d_34 as in the code
    snippets: int = 3  # 3 -> 6 order classes; 4 -> 24 (TCG_FourClip)
    frames: int = 16
    gap: int = 8
    frameset: int = 4  # frames per intra-snippet node
    c3d_frameset_repeat: int = 2  # C3D pools time 3x: frame-sets are tiled along time to 8 frames (repeating2)
    min_video_frames: int = 64  # shorter videos are skipped (the official vcop_train_16_8_3 lists)
    clip_fps: float = 0.0  # 0: consecutive frames at the stored (native) rate, as the official code
    stkd: str = "temporal_demean"  # temporal_demean | dct_highpass (identical output) | none
    intra_edges: str = "chain"  # chain | full
    edge_drop: float = 0.2
    feat_mask: float = 0.1
    view1_augment: bool = False  # True: GRACE's default, both views augmented
    intra_edge_mask_scope: str = "batch_per_position"  # the code's; or per_sample
    tau: float = 0.5
    asop_dropout: float = 0.5
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # intra (frame), inter (clip), order

    def __post_init__(self):
        for key, allowed in (("stkd", ("temporal_demean", "dct_highpass", "none")), ("intra_edges", ("chain", "full")),
                             ("intra_edge_mask_scope", ("batch_per_position", "per_sample"))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"tcgl {key} must be one of {', '.join(allowed)}, not {getattr(self, key)!r}")
        if self.frames % self.frameset:
            raise ValueError(f"tcgl frames ({self.frames}) must be a multiple of frameset ({self.frameset})")


# ---- STKD: temporal high-pass -------------------------------------------------------------------------------

def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II: X = D x, D[k, t] = α_k cos(π k (t + ½) / n)."""
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    t = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    d = torch.cos(math.pi * k * (t + 0.5) / n) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


def stkd(x: torch.Tensor, mode: str) -> torch.Tensor:
    """[M, C, T, H, W] -> the same with the temporal DC component removed (or untouched for `none`)."""
    if mode == "temporal_demean":
        return x - x.mean(dim=2, keepdim=True)
    if mode == "dct_highpass":
        d = dct_matrix(x.shape[2]).to(x.device, x.dtype)
        coefficients = torch.einsum("kt,mcthw->mckhw", d, x)
        coefficients = torch.cat([torch.zeros_like(coefficients[:, :, :1]), coefficients[:, :, 1:]], dim=2)
        return torch.einsum("kt,mckhw->mcthw", d, coefficients)
    return x


# ---- graphs -------------------------------------------------------------------------------------------------

def intra_snippet_adjacency(nodes: int, edges: str) -> torch.Tensor:
    """[N, N] undirected chain 1-2-...-N (or fully connected); rows are targets, columns sources."""
    if edges == "full":
        return torch.ones(nodes, nodes) - torch.eye(nodes)
    chain = torch.zeros(nodes, nodes)
    index = torch.arange(nodes - 1)
    chain[index, index + 1] = chain[index + 1, index] = 1
    return chain


def inter_snippet_adjacency(snippets: int) -> torch.Tensor:
    """[S!, S, S]: for each order class, shuffled positions i, j joined when their snippets were adjacent."""
    orders = torch.tensor(permutations(snippets))  # orders[o][i]: original index of the snippet at position i
    return ((orders.unsqueeze(2) - orders.unsqueeze(1)).abs() == 1).float()


def normalise_adjacency(a: torch.Tensor) -> torch.Tensor:
    """GCNConv's D̂^-½ (A + I) D̂^-½, D̂ the in-degree with self-loops (PyG's gcn_norm, edges source -> target)."""
    a_hat = a + torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    d = a_hat.sum(-1).rsqrt()
    return a_hat * d.unsqueeze(-1) * d.unsqueeze(-2)


def drop_edges(a: torch.Tensor, p: float, mask_shape: tuple[int, ...]) -> torch.Tensor:
    """Drop each directed edge with probability p; one mask of `mask_shape`, broadcast against `a`."""
    return a * (torch.rand(mask_shape, device=a.device) >= p).to(a.dtype)


def mask_features(x: torch.Tensor, p: float) -> torch.Tensor:
    """[..., N, C]: zero each feature column with probability p, the same columns for all N nodes of a graph."""
    keep = torch.rand(*x.shape[:-2], 1, x.shape[-1], device=x.device) >= p
    return x * keep.to(x.dtype)


class DenseGCN(nn.Module):
    """One GCNConv layer per position, batched: [B, P, N, C] nodes, [B or 1, P, N, N] normalised adjacency."""

    def __init__(self, positions: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(positions, dim, dim))
        self.bias = nn.Parameter(torch.zeros(positions, dim))
        bound = math.sqrt(6.0 / (2 * dim))  # Glorot, as PyG
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, a_norm: torch.Tensor) -> torch.Tensor:
        return a_norm @ torch.einsum("bpnc,pcd->bpnd", x, self.weight) + self.bias.unsqueeze(1)


# ---- ASOP ---------------------------------------------------------------------------------------------------

class ASOP(nn.Module):
    """Per-snippet sigmoid gates from the concatenated context (reduction 6), then the order classifier."""

    def __init__(self, snippets: int, dim: int, dropout: float):
        super().__init__()
        context = snippets * dim
        self.gates = nn.ModuleList(nn.Sequential(nn.Linear(context, max(1, context // 6)), nn.ReLU(inplace=True),
                                                 nn.Linear(max(1, context // 6), dim), nn.Sigmoid())
                                   for _ in range(snippets))
        self.classifier = nn.Sequential(nn.Linear(context, dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                        nn.Linear(dim, math.factorial(snippets)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """[B, S, C] view-1 snippet nodes -> [B, S!] order logits."""
        context = h.flatten(1)
        recalibrated = [gate(context) * h[:, k] for k, gate in enumerate(self.gates)]
        return self.classifier(torch.cat(recalibrated, dim=1))


# ---- the method ---------------------------------------------------------------------------------------------

@register
class TCGL(Method):
    name = "tcgl"
    Config = TCGLConfig
    cross_sample = False  # every term lives within one sample: micro-batches accumulate like the whole batch

    def __init__(self, config: TCGLConfig):
        super().__init__(config)
        self.video, _ = build_encoders(config, audio=False)
        dim, s = self.video.out_dim, config.snippets
        self.gcn_intra = DenseGCN(s, dim)  # gcn_f1..f3: one per shuffled position
        self.gcn_inter = DenseGCN(1, dim)
        self.projector = nn.Sequential(nn.Linear(dim, dim), nn.ELU(), nn.Linear(dim, dim))
        self.asop = ASOP(s, dim, config.asop_dropout)
        self.register_buffer("intra_adjacency", intra_snippet_adjacency(config.frames // config.frameset,
                                                                        config.intra_edges), persistent=False)
        self.register_buffer("inter_adjacency", inter_snippet_adjacency(s), persistent=False)

    def view_spec(self) -> ViewSpec:
        cfg = self.config
        return ViewSpec(clips=cfg.snippets, frames=cfg.frames, tuple_gap=cfg.gap, audio=False, fps=cfg.clip_fps,
                        min_frames=cfg.min_video_frames)

    def video_input(self, clips: torch.Tensor) -> torch.Tensor:
        """STKD (and, for C3D, short frame-sets tiled along time: frames 0 1 2 3 0 1 2 3, the official
        `repeating2` after `frequency`), in training and downstream alike."""
        clips = stkd(clips, self.config.stkd)
        if self.config.video_backbone == "c3d" and clips.shape[2] < 8:
            clips = torch.cat([clips] * self.config.c3d_frameset_repeat, dim=2)
        return clips

    def forward(self, batch: dict):
        cfg = self.config
        video, order = batch["video"], batch["order"]  # [B, S, 3, T, H, W] in shuffled order; [B]
        b, s, c, t, height, width = video.shape
        k = t // cfg.frameset
        snippet_nodes = self.video_features(flat(video)).view(b, s, -1)
        framesets = flat(video).unflatten(2, (k, cfg.frameset)).transpose(1, 2).reshape(-1, c, cfg.frameset, height, width)
        frameset_nodes = self.video_features(framesets).view(b, s, k, -1)

        intra_scope = (1, s, k, k) if cfg.intra_edge_mask_scope == "batch_per_position" else (b, s, k, k)
        intra1, intra2 = self.two_views(frameset_nodes, self.intra_adjacency.expand(1, s, k, k), intra_scope,
                                        self.gcn_intra)
        inter_adjacency = self.inter_adjacency[order].unsqueeze(1)  # [B, 1, S, S]
        inter1, inter2 = self.two_views(snippet_nodes.unsqueeze(1), inter_adjacency, (b, 1, s, s), self.gcn_inter)

        loss_intra = grace_loss(self.projector(intra1).flatten(0, 1), self.projector(intra2).flatten(0, 1), cfg.tau).mean()
        loss_inter = grace_loss(self.projector(inter1[:, 0]), self.projector(inter2[:, 0]), cfg.tau).mean()
        logits = self.asop(inter1[:, 0])
        loss_order = F.cross_entropy(logits.float(), order)
        w_intra, w_inter, w_order = cfg.loss_weights
        loss = w_intra * loss_intra + w_inter * loss_inter + w_order * loss_order
        return loss, detached({"intra": loss_intra, "inter": loss_inter, "order_ce": loss_order,
                               "order_acc": accuracy(logits, order)})

    def two_views(self, nodes, adjacency, edge_mask_shape, gcn) -> tuple[torch.Tensor, torch.Tensor]:
        """GCN outputs of the clean graph (view 1) and of the edge-dropped, feature-masked graph (view 2)."""
        cfg = self.config

        def augmented():
            dropped = drop_edges(adjacency, cfg.edge_drop, edge_mask_shape)
            return gcn(mask_features(nodes, cfg.feat_mask), normalise_adjacency(dropped))

        view1 = augmented() if cfg.view1_augment else gcn(nodes, normalise_adjacency(adjacency))
        return view1, augmented()
