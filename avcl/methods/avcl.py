"""AVCL: attention fusion (AMFM), co-correlation alignment (CGRA) and contrastive learning (SelfCL).

Liu, Tan & Lan, "Self-supervised Contrastive Learning for Audio-Visual Action Recognition" (ICIP 2023).
RECONSTRUCTION: only the abstract is public. The equations below follow docs/methods.md §2.4; every
reconstructed choice is a field of `AVCLConfig` (§2.5) so an ablation is one `--set`:

- AMFM (`fusion="amfm"`): `amfm_layers` layers of cross-modal attention (video tokens attend to audio tokens and
  back, `amfm_heads` heads, residual + LayerNorm), then modality weights β = softmax(wᵀ tanh(W[v̄; ā] + b))
  (`modality_gate="softmax_tanh"`, or `"equal"`: β = ½) and the fused f = β_v v̄' + β_a ā'.
  `fusion="concat_mean"` skips the attention (gate over the pooled features); `"none"` has no fused embedding.
- CGRA (`cgra=True`): Σ_i (1 - C_ii)² + λ_off Σ_{i≠j} C_ij² over batch-standardised projections; optional
  sample-level `cgra_guided` term weighted by softmax_b(⟨p̂_v,b, p̂_a,b⟩ / τ_g).
- SelfCL: symmetric cross-modal InfoNCE (τ = 0.07) on each of the two views, plus the fused term between the
  two views' fused embeddings (`selfcl_fused_term`). The two views are two augmentations of the same clip (same
  frames and audio window, independent crops, colour and SpecAugment), as docs/methods.md §2.4 describes
  (`selfcl_views = "same_clip"`); `"two_clips"` draws them at independent times instead.
Total: L = L_xm + L_ff + λ_cgra L_cgra. `--preset avcl-author` switches to the authors' audio profile (24 kHz,
256 mels, docs/methods.md §2.3).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from avcl.data.views import ViewSpec
from avcl.methods.base import EncoderConfig, Method, build_encoders, detached, flat, register
from avcl.methods.losses import cocorrelation_loss, guided_alignment, symmetric_info_nce
from avcl.models.heads import mlp


@dataclasses.dataclass
class AVCLConfig(EncoderConfig):
    fusion: str = "amfm"  # amfm | concat_mean | none
    amfm_layers: int = 1
    amfm_heads: int = 8
    modality_gate: str = "softmax_tanh"  # softmax_tanh | equal
    cgra: bool = True
    cgra_lambda_off: float = 5e-3
    cgra_guided: bool = False
    cgra_tau_g: float = 0.1
    selfcl_tau: float = 0.07
    selfcl_fused_term: bool = True
    lambda_cgra: float = 1.0
    proj_hidden: int = 2048
    proj_dim: int = 128
    selfcl_views: str = "same_clip"  # same_clip (two augmentations of one clip) | two_clips (independent times)
    audio_seconds: float = 2.0
    clip_fps: float = 0.0  # rate clips are sampled at (0: the stored frames, consecutive)

    def __post_init__(self):
        if self.fusion not in ("amfm", "concat_mean", "none"):
            raise ValueError(f"avcl fusion must be amfm, concat_mean or none, not {self.fusion!r}")
        if self.selfcl_views not in ("same_clip", "two_clips"):
            raise ValueError(f"avcl selfcl_views must be same_clip or two_clips, not {self.selfcl_views!r}")
        if self.modality_gate not in ("softmax_tanh", "equal"):
            raise ValueError(f"avcl modality_gate must be softmax_tanh or equal, not {self.modality_gate!r}")


class CrossAttention(nn.Module):
    """x attends to y: LayerNorm(x + MHA(q=x, k=y, v=y))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, y):
        return self.norm(x + self.attention(x, y, y, need_weights=False)[0])


class AMFM(nn.Module):
    """Attention-based multi-modal fusion: token sequences [B, T, C] in, fused [B, C] and β [B, 2] out."""

    def __init__(self, dim: int, config: AVCLConfig):
        super().__init__()
        layers = config.amfm_layers if config.fusion == "amfm" else 0
        self.video_to_audio = nn.ModuleList(CrossAttention(dim, config.amfm_heads) for _ in range(layers))
        self.audio_to_video = nn.ModuleList(CrossAttention(dim, config.amfm_heads) for _ in range(layers))
        self.equal = config.modality_gate == "equal"
        self.gate = nn.Sequential(nn.Linear(2 * dim, dim), nn.Tanh(), nn.Linear(dim, 2))

    def forward(self, v_tokens, a_tokens):
        for v_attends, a_attends in zip(self.video_to_audio, self.audio_to_video):
            v_tokens, a_tokens = v_attends(v_tokens, a_tokens), a_attends(a_tokens, v_tokens)
        v, a = v_tokens.mean(1), a_tokens.mean(1)
        if self.equal:
            beta = torch.full((len(v), 2), 0.5, device=v.device, dtype=v.dtype)
        else:
            beta = torch.softmax(self.gate(torch.cat([v, a], dim=1)), dim=1)
        return beta[:, :1] * v + beta[:, 1:] * a, beta


@register
class AVCL(Method):
    name = "avcl"
    Config = AVCLConfig

    def __init__(self, config: AVCLConfig):
        super().__init__(config)
        self.video, self.audio = build_encoders(config)
        dim = self.video.out_dim
        head = [dim, config.proj_hidden, config.proj_dim]
        self.video_proj, self.audio_proj = mlp(head), mlp(head)
        if config.fusion != "none":
            self.fusion = AMFM(dim, config)
            self.fused_proj = mlp(head)

    def view_spec(self) -> ViewSpec:
        cfg = self.config
        return ViewSpec(clips=2, audio_seconds=cfg.audio_seconds, fps=cfg.clip_fps,
                        same_window=cfg.selfcl_views == "same_clip")

    def embed(self, batch: dict, reuse: dict | None = None) -> dict:
        """Projections of each view (rows: sample-major, view-minor), and its fused embedding and gate."""
        v_tokens, a_tokens = self.tokens(flat(batch["video"]), flat(batch["audio"]))
        out = {"p_v": self.video_proj(v_tokens.mean(1)), "p_a": self.audio_proj(a_tokens.mean(1))}
        if self.config.fusion != "none":
            fused, out["beta"] = self.fusion(v_tokens, a_tokens)
            out["z_f"] = F.normalize(self.fused_proj(fused), dim=1)
        return out

    def objective(self, meta: dict, embedded: dict):
        cfg = self.config
        n_clips = meta["start"].shape[1]
        p_v, p_a = embedded["p_v"], embedded["p_a"]
        z_v, z_a = F.normalize(p_v, dim=1), F.normalize(p_a, dim=1)
        per_clip = [symmetric_info_nce(zv, za, cfg.selfcl_tau) for zv, za in zip(_clips(z_v, n_clips), _clips(z_a, n_clips))]
        loss_xm = torch.stack([loss for loss, _ in per_clip]).mean()
        terms = {"xm": loss_xm, "acc_v2a": torch.stack([acc for _, acc in per_clip]).mean()}
        loss = loss_xm
        if cfg.fusion != "none":
            terms["beta_video"] = embedded["beta"][:, 0].mean()
            if cfg.selfcl_fused_term:
                z_f = _clips(embedded["z_f"], n_clips)
                terms["ff"], terms["acc_ff"] = symmetric_info_nce(z_f[0], z_f[1], cfg.selfcl_tau)
                loss = loss + terms["ff"]
        if cfg.cgra:
            terms["cgra"] = cocorrelation_loss(p_v, p_a, cfg.cgra_lambda_off)
            if cfg.cgra_guided:
                terms["cgra_guided"] = guided_alignment(p_v, p_a, cfg.cgra_tau_g)
                terms["cgra"] = terms["cgra"] + terms["cgra_guided"]
            loss = loss + cfg.lambda_cgra * terms["cgra"]
        return loss, detached(terms)

    def tokens(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-time-step tokens: video [M, T', C] (space averaged), audio [M, T'a, C] (frequency averaged)."""
        v_tokens = self.video.features(video).mean(dim=(3, 4)).transpose(1, 2)
        a_tokens = self.audio.features(audio).mean(dim=2).transpose(1, 2)
        return v_tokens, a_tokens

    def fused_features(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor | None:
        """AMFM's fused feature f (downstream: the fused head of audio-visual action recognition)."""
        if self.config.fusion == "none":
            return None
        return self.fusion(*self.tokens(video, audio))[0]


def _clips(x: torch.Tensor, n_clips: int) -> list[torch.Tensor]:
    """[B * N, D] -> N tensors [B, D], one per clip index."""
    return list(x.view(-1, n_clips, x.shape[-1]).unbind(1))
