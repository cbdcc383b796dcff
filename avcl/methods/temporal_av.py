"""Audio-visual contrastive learning with temporal self-supervision.

Jenni, Black & Collomosse, "Audio-Visual Contrastive Learning with Temporal Self-Supervision" (AAAI 2023).
RECONSTRUCTION: no code is public and only the abstract was read; this follows methods.md §3.4 and every
reconstructed choice is a field of `TemporalAVConfig` (§3.5).

Per video the data gives two clips from disjoint windows, each at a random playback speed (frame skip 1/2/4/8)
and direction, with the audio of the same window sped up and reversed alike (`avcl.data.views`), plus one audio
window taken before / at / after clip 0.

1. Temporal tasks (`tasks`), MLP heads on the pooled backbone features: speed (4-way) and direction (2-way) in
   each modality, intra-modal order (is clip 0 before clip 1?), inter-modal order (audio before / with / after).
2. Contrast (`pairs`: video-video, video-audio, optionally audio-audio) with a multi-positive InfoNCE. Keys come
   from a momentum encoder (or the online one, stop-gradient) and a FIFO queue of past keys per modality:
   - sample-dependent positives: the `nn_k` nearest queue neighbours of each query;
   - sample-dependent negatives: the same video under another temporal transformation. The two clips of a video
     are positives only when their speed and direction agree (`temporal_negatives`, `speed_clips_as`), and a
     frame-shuffled copy of clip 0 (key encoder only) joins every video-key set as a negative;
   - optional MoCHi-style hard negatives mixed from the hardest queue entries.
L = L_con + λ_temp L_temp.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from avcl.data.views import METHOD_VIEWS, ViewSpec
from avcl.methods.base import EncoderConfig, Method, build_encoders, detached, flat, register
from avcl.methods.losses import accuracy, gather_detached, multi_positive_nce, own_rows, world
from avcl.models.heads import mlp

TASKS = ("speed", "direction", "intra_order", "inter_order")


@dataclasses.dataclass
class TemporalAVConfig(EncoderConfig):
    speeds: tuple[int, ...] = (1, 2, 4, 8)
    directions: tuple[int, ...] = (1, -1)
    audio_seconds: float = 1.0
    tasks: tuple[str, ...] = TASKS
    lambda_temp: float = 1.0
    pairs: tuple[str, ...] = ("vv", "va")  # any of vv, va, aa
    proj_hidden: int = 512
    proj_dim: int = 128
    tau: float = 0.1
    queue_size: int = 16384  # keep below the number of training clips; 0 disables the queue
    queue_source: str = "momentum"  # momentum | online_stopgrad
    momentum: float = 0.99
    nn_k: int = 5  # nearest-neighbour positives from the queue; 0 disables
    temporal_negatives: tuple[str, ...] = ("speed", "direction", "shuffle")  # any subset
    speed_clips_as: str = "negatives"  # negatives | positives (the paper decides: TODO(PDF))
    hard_negatives: str = "off"  # off | mochi
    mochi_mix: int = 16  # synthesised negatives per query
    mochi_from: int = 64  # ... mixed from this many hardest queue entries

    def __post_init__(self):
        for key, allowed in (("tasks", TASKS), ("pairs", ("vv", "va", "aa")),
                             ("temporal_negatives", ("speed", "direction", "shuffle"))):
            unknown = set(getattr(self, key)) - set(allowed)
            if unknown:
                raise ValueError(f"temporal-av {key}: unknown {sorted(unknown)}; allowed: {', '.join(allowed)}")
        for key, allowed in (("queue_source", ("momentum", "online_stopgrad")),
                             ("speed_clips_as", ("negatives", "positives")), ("hard_negatives", ("off", "mochi"))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"temporal-av {key} must be one of {', '.join(allowed)}, not {getattr(self, key)!r}")
        if self.hard_negatives == "mochi" and self.queue_size < self.mochi_from:
            raise ValueError("temporal-av hard_negatives=mochi needs queue_size >= mochi_from")


@register
class TemporalAV(Method):
    name = "temporal-av"
    Config = TemporalAVConfig

    def __init__(self, config: TemporalAVConfig):
        super().__init__(config)
        self.video, self.audio = build_encoders(config)
        dim = self.video.out_dim
        self.video_proj = mlp([dim, config.proj_hidden, config.proj_dim])
        self.audio_proj = mlp([self.audio.out_dim, config.proj_hidden, config.proj_dim])
        self.heads = nn.ModuleDict(_task_heads(config, dim))
        if config.queue_source == "momentum":
            self.key = nn.ModuleDict({name: copy.deepcopy(getattr(self, name)) for name in _ONLINE})
            self.key.requires_grad_(False)
        for modality in ("video", "audio"):
            self.register_buffer(f"queue_{modality}", F.normalize(torch.randn(config.queue_size, config.proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    def view_spec(self) -> ViewSpec:
        cfg = self.config
        return dataclasses.replace(METHOD_VIEWS["temporal-av"], speeds=cfg.speeds, directions=cfg.directions,
                                   audio_seconds=cfg.audio_seconds, inter_order="inter_order" in cfg.tasks)

    def forward(self, batch: dict):
        video, audio = batch["video"], batch["audio"]  # [B, N, 3, T, H, W], [B, N, 1, mels, frames]
        f_v, f_a = self.video(flat(video)), self.audio(flat(audio))
        z_v = F.normalize(self.video_proj(f_v), dim=1)
        z_a = F.normalize(self.audio_proj(f_a), dim=1)
        keys = self.keys(video, audio, z_v, z_a)
        terms: dict[str, torch.Tensor] = {}
        loss_con = self.contrast(z_v, z_a, keys, batch, terms)
        loss_temp = self.temporal_tasks(f_v, f_a, batch, terms)
        if self.training:
            self.enqueue(keys["video"], keys["audio"])
        terms["con"], terms["temp"] = loss_con, loss_temp
        return loss_con + self.config.lambda_temp * loss_temp, detached(terms)

    # ---- keys: momentum encoder (or stop-gradient online embeddings), gathered over ranks ----------------------

    @torch.no_grad()
    def keys(self, video, audio, z_v, z_a) -> dict[str, torch.Tensor]:
        cfg = self.config
        if cfg.queue_source == "momentum":
            if self.training:
                online = [p for name in _ONLINE for p in getattr(self, name).parameters()]
                torch._foreach_lerp_(list(self.key.parameters()), online, 1 - cfg.momentum)
            k_v, k_a = self.key_embedding("video", flat(video)), self.key_embedding("audio", flat(audio))
        else:
            k_v, k_a = z_v.detach(), z_a.detach()
        keys = {"video": k_v, "audio": k_a}
        if "shuffle" in cfg.temporal_negatives:
            keys["shuffled"] = self.shuffled_key(video[:, 0])
        return keys

    def shuffled_key(self, clip: torch.Tensor) -> torch.Tensor:
        """Key embedding of clip 0 with its frames in a random order: a negative for every video key set."""
        return self.key_embedding("video", clip[:, :, torch.randperm(clip.shape[2], device=clip.device)])

    def key_embedding(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised projection by the momentum encoder (or, for online_stopgrad, the online one)."""
        if self.config.queue_source == "momentum":
            encoder, projection = self.key[modality], self.key[f"{modality}_proj"]
        else:
            encoder, projection = getattr(self, modality), getattr(self, f"{modality}_proj")
        return F.normalize(projection(encoder(x)), dim=1)

    @torch.no_grad()
    def enqueue(self, k_v: torch.Tensor, k_a: torch.Tensor) -> None:
        """Append the global batch's keys (identical on every rank, so the queues stay identical)."""
        size = self.config.queue_size
        if size == 0:
            return
        k_v, k_a = gather_detached(k_v)[-size:], gather_detached(k_a)[-size:]
        index = (self.queue_ptr + torch.arange(len(k_v), device=k_v.device)) % size
        self.queue_video[index] = k_v.to(self.queue_video.dtype)
        self.queue_audio[index] = k_a.to(self.queue_audio.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(k_v)) % size)
        self.queue_filled.copy_((self.queue_filled + len(k_v)).clamp(max=size))

    # ---- contrast ------------------------------------------------------------------------------------------

    def contrast(self, z_v, z_a, keys, batch, terms) -> torch.Tensor:
        cfg = self.config
        b, n = batch["video"].shape[:2]
        same_video, compatible, is_self = self.pair_masks(batch, b, n)
        k_v, k_a = gather_detached(keys["video"]), gather_detached(keys["audio"])
        extra_video = gather_detached(keys["shuffled"]) if "shuffled" in keys else k_v[:0]
        queues = {"video": self.queue_video.clone(), "audio": self.queue_audio.clone()}  # enqueue mutates them

        def loss(query, key_modality, exclude_self):
            batch_keys = k_v if key_modality == "video" else k_a
            extra = extra_video if key_modality == "video" else extra_video[:0]
            positive = compatible & ~is_self if exclude_self else compatible
            candidate = ~is_self if exclude_self else torch.ones_like(is_self)
            return self.multi_positive(query, batch_keys, extra, queues[key_modality], positive, candidate)

        losses = {}
        if "vv" in cfg.pairs:
            losses["vv"] = loss(z_v, "video", exclude_self=True)
        if "va" in cfg.pairs:
            losses["va"] = (loss(z_v, "audio", exclude_self=False) + loss(z_a, "video", exclude_self=False)) / 2
        if "aa" in cfg.pairs:
            losses["aa"] = loss(z_a, "audio", exclude_self=True)
        terms.update(losses)
        terms["same_video_negatives"] = (same_video & ~compatible).float().sum(1).mean()
        return torch.stack(list(losses.values())).sum() if losses else z_v.sum() * 0

    def pair_masks(self, batch, b: int, n: int):
        """[B*N, G*B*N] masks of this rank's clips against the global batch: same video, compatible, itself."""
        cfg = self.config
        device = batch["video"].device
        rows = own_rows(b * n, device)
        global_rows = torch.arange(world()[1] * b * n, device=device)
        same_video = (rows // n).unsqueeze(1) == (global_rows // n).unsqueeze(0)
        compatible = same_video.clone()
        for key, switch in (("speed", cfg.speed_clips_as == "negatives" and "speed" in cfg.temporal_negatives),
                            ("direction", "direction" in cfg.temporal_negatives)):
            if switch:
                local = flat(batch[key].unsqueeze(-1)).squeeze(-1)
                compatible &= local.unsqueeze(1) == gather_detached(local).unsqueeze(0)
        is_self = rows.unsqueeze(1) == global_rows.unsqueeze(0)
        return same_video, compatible, is_self

    def multi_positive(self, query, batch_keys, extra, queue, positive, candidate) -> torch.Tensor:
        """Multi-positive InfoNCE of `query` over batch keys + extra negatives + queue (+ MoCHi mixtures)."""
        cfg = self.config
        tau = cfg.tau
        query = query.float()
        logits = [query @ batch_keys.float().t() / tau, query @ extra.float().t() / tau]
        positives = [positive, torch.zeros(len(query), len(extra), dtype=torch.bool, device=query.device)]
        candidates = [candidate, torch.ones_like(positives[1])]
        if cfg.queue_size:
            queue = queue.float()
            queue_logits = query @ queue.t() / tau
            filled = (torch.arange(cfg.queue_size, device=query.device) < self.queue_filled).unsqueeze(0)
            queue_logits = queue_logits.masked_fill(~filled, float("-inf"))
            neighbours = torch.zeros_like(filled.expand_as(queue_logits))
            if cfg.nn_k:
                top = queue_logits.topk(min(cfg.nn_k, cfg.queue_size), dim=1).indices
                neighbours = neighbours.scatter(1, top, True) & filled
            logits.append(queue_logits)
            positives.append(neighbours)
            candidates.append(filled.expand_as(queue_logits))
            if cfg.hard_negatives == "mochi":
                mixed = mochi_negatives(query, queue, queue_logits.masked_fill(neighbours, float("-inf")), cfg)
                logits.append(mixed / tau)
                positives.append(torch.zeros_like(mixed, dtype=torch.bool))
                candidates.append((self.queue_filled >= cfg.mochi_from).expand_as(mixed))
        return multi_positive_nce(torch.cat(logits, 1), torch.cat(positives, 1), torch.cat(candidates, 1))

    # ---- temporal tasks ------------------------------------------------------------------------------------

    def temporal_tasks(self, f_v, f_a, batch, terms) -> torch.Tensor:
        cfg = self.config
        b, n = batch["video"].shape[:2]
        losses = []

        def task(name, logits, target):
            losses.append(F.cross_entropy(logits.float(), target))
            terms[name], terms[f"{name}_acc"] = losses[-1], accuracy(logits, target)

        for modality, features in (("video", f_v), ("audio", f_a)):
            for label in ("speed", "direction"):
                if label in cfg.tasks:
                    task(f"{modality}_{label}", self.heads[f"{modality}_{label}"](features), flat(batch[label]))
            if "intra_order" in cfg.tasks:
                pairs = features.view(b, n, -1)
                first = (batch["start"][:, 0] < batch["start"][:, 1]).long()
                task(f"{modality}_order", self.heads[f"{modality}_order"](pairs[:, :2].flatten(1)), first)
        if "inter_order" in cfg.tasks:
            shifted = self.audio(batch["audio_shifted"])
            task("av_order", self.heads["av_order"](torch.cat([f_v.view(b, n, -1)[:, 0], shifted], 1)),
                 batch["xorder"])
        return torch.stack(losses).sum() if losses else f_v.sum() * 0


_ONLINE = ("video", "audio", "video_proj", "audio_proj")


def _task_heads(cfg: TemporalAVConfig, dim: int) -> dict[str, nn.Module]:
    heads = {}
    for modality in ("video", "audio"):
        if "speed" in cfg.tasks:
            heads[f"{modality}_speed"] = mlp([dim, dim, len(cfg.speeds)], norm=False)
        if "direction" in cfg.tasks:
            heads[f"{modality}_direction"] = mlp([dim, dim, 2], norm=False)
        if "intra_order" in cfg.tasks:
            heads[f"{modality}_order"] = mlp([2 * dim, dim, 2], norm=False)
    if "inter_order" in cfg.tasks:
        heads["av_order"] = mlp([2 * dim, dim, 3], norm=False)
    return heads


def mochi_negatives(query: torch.Tensor, queue: torch.Tensor, queue_logits: torch.Tensor, cfg) -> torch.Tensor:
    """[R, mochi_mix] similarities of each query to convex mixtures of pairs of its hardest queue negatives."""
    hardest = queue[queue_logits.topk(cfg.mochi_from, dim=1).indices]  # [R, F, D]
    pick = torch.randint(cfg.mochi_from, (len(query), cfg.mochi_mix, 2), device=query.device)
    first = hardest.gather(1, pick[..., :1].expand(-1, -1, hardest.shape[-1]))
    second = hardest.gather(1, pick[..., 1:].expand(-1, -1, hardest.shape[-1]))
    alpha = torch.rand(len(query), cfg.mochi_mix, 1, device=query.device)
    mixed = F.normalize(alpha * first + (1 - alpha) * second, dim=-1)
    return torch.einsum("rd,rmd->rm", query, mixed.detach())
