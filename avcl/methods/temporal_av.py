"""Audio-visual contrastive learning with temporal self-supervision.

Jenni, Black & Collomosse, "Audio-Visual Contrastive Learning with Temporal Self-Supervision" (AAAI 2023).
RECONSTRUCTION: no code is public and only the abstract was read; this follows docs/methods.md §3.4 and every
reconstructed choice is a field of `TemporalAVConfig` (§3.5). Its defaults are reconstruction defaults.

Per video the data gives two clips from disjoint windows, each at a random playback speed (frame skip 1/2/4/8)
and direction, with the audio of the same window sped up (anti-aliased) and reversed alike (`avcl.data.views`),
plus one audio window taken before / at / after clip 0, placed so that all three lie in the recording.

1. Temporal tasks (`tasks`, weighted by `task_weights`), MLP heads on the pooled backbone features: speed and
   direction in each modality, intra-modal order (is clip 0 before clip 1?), inter-modal order (audio before /
   with / after clip 0; samples too short for it carry the label -1 and are left out).
2. Contrast (`pairs`: video-video, video-audio, optionally audio-audio), a multi-positive InfoNCE whose usual
   pairs are *supplemented*, as the abstract says, with sample-dependent positives and negatives:
   - usual positives: the other clip of the same video (vv, aa); the audio of the query's own clip (va,
     `va_positives = "aligned_only"`, or every audio of its video with `"same_video"`);
   - sample-dependent negatives: time-transformed copies of every clip's own window (`temporal_negatives`:
     reversed, re-speeded (its first half at half speed), frame-shuffled), embedded by the key encoder;
   - sample-dependent positives: the `nn_k` nearest neighbours in a FIFO queue of past keys (after
     `nn_warmup_steps`), found from the query, its own key or its positive's key (`nn_source`, NNCLR's choice);
   - optional MoCHi-style hard negatives mixed from the hardest queue entries.
   Keys come from a momentum encoder (or the online one with stop-gradient). `same_video = "relabel"` keeps an
   ablation: the other clip counts as a negative when its speed or direction differs.
L = L_con + λ_temp Σ_task w_task L_task. The speed classes each step drew are logged (`speed_share_k`).
"""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from avcl.data.views import ViewSpec
from avcl.methods.base import EncoderConfig, Method, build_encoders, detached, flat, register
from avcl.methods.losses import multi_positive_nce
from avcl.models.heads import mlp
from avcl.runtime import gather_detached, own_rows, world

TASKS = ("speed", "direction", "intra_order", "inter_order")
TRANSFORMS = ("reverse", "respeed", "shuffle")


@dataclasses.dataclass
class TemporalAVConfig(EncoderConfig):
    speeds: tuple[int, ...] = (1, 2, 4, 8)
    directions: tuple[int, ...] = (1, -1)
    clip_fps: float = 16.0  # clips sampled at this rate from any stored rate (0: the stored frames)
    audio_window: str = "clip"  # clip: the clip's span (frames x stride / clip_fps) | seconds: audio_seconds
    audio_seconds: float = 1.0
    audio_speed: str = "resample"  # resample (anti-aliased) | box (averages k samples: aliases, a speed cue)
    tasks: tuple[str, ...] = TASKS
    task_weights: dict = dataclasses.field(default_factory=dict)  # {task: weight}, 1 where absent
    lambda_temp: float = 1.0
    pairs: tuple[str, ...] = ("vv", "va")  # any of vv, va, aa
    proj_hidden: int = 512
    proj_dim: int = 128
    tau: float = 0.1
    tau_vv: float = 0.0  # per pair type; 0: tau
    tau_va: float = 0.0
    same_video: str = "positive"  # positive | relabel (other clip negative when speed or direction differs)
    va_positives: str = "aligned_only"  # aligned_only | same_video
    queue_size: int = 16384  # keep below the number of training clips; 0 disables the queue
    queue_source: str = "momentum"  # momentum | online_stopgrad
    momentum: float = 0.99
    nn_k: int = 5  # nearest-neighbour positives from the queue; 0 disables
    nn_warmup_steps: int = 0  # no neighbour positives before this many steps
    nn_source: str = "query"  # query | key | positive_key
    temporal_negatives: tuple[str, ...] = TRANSFORMS  # any subset
    hard_negatives: str = "off"  # off | mochi
    mochi_mix: int = 16  # synthesised negatives per query
    mochi_from: int = 64  # ... mixed from this many hardest queue entries

    def __post_init__(self):
        for key, allowed in (("tasks", TASKS), ("pairs", ("vv", "va", "aa")), ("temporal_negatives", TRANSFORMS)):
            unknown = set(getattr(self, key)) - set(allowed)
            if unknown:
                raise ValueError(f"temporal-av {key}: unknown {sorted(unknown)}; allowed: {', '.join(allowed)}")
        unknown = set(self.task_weights) - set(TASKS)
        if unknown:
            raise ValueError(f"temporal-av task_weights: unknown {sorted(unknown)}; tasks: {', '.join(TASKS)}")
        for key, allowed in (("queue_source", ("momentum", "online_stopgrad")), ("hard_negatives", ("off", "mochi")),
                             ("same_video", ("positive", "relabel")), ("va_positives", ("aligned_only", "same_video")),
                             ("nn_source", ("query", "key", "positive_key")), ("audio_window", ("clip", "seconds")),
                             ("audio_speed", ("resample", "box"))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"temporal-av {key} must be one of {', '.join(allowed)}, not {getattr(self, key)!r}")
        if self.hard_negatives == "mochi" and self.queue_size < self.mochi_from:
            raise ValueError("temporal-av hard_negatives=mochi needs queue_size >= mochi_from")
        if self.audio_window == "clip" and not self.clip_fps:
            raise ValueError("temporal-av audio_window=clip needs clip_fps (the rate that gives a clip its span)")


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
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def view_spec(self) -> ViewSpec:
        cfg = self.config
        return ViewSpec(clips=2, speeds=cfg.speeds, directions=cfg.directions, disjoint=True,
                        inter_order="inter_order" in cfg.tasks, fps=cfg.clip_fps, audio_speed=cfg.audio_speed,
                        audio_seconds=0.0 if cfg.audio_window == "clip" else cfg.audio_seconds)

    # ---- the step's state: momentum encoder before it, queue after it ------------------------------------------

    @torch.no_grad()
    def prepare_step(self) -> None:
        if self.config.queue_source == "momentum":
            online = [p for name in _ONLINE for p in getattr(self, name).parameters()]
            torch._foreach_lerp_(list(self.key.parameters()), online, 1 - self.config.momentum)

    @torch.no_grad()
    def finish_step(self, embedded: dict) -> None:
        """Append the global batch's keys (identical on every rank, so the queues stay identical)."""
        self.steps += 1
        size = self.config.queue_size
        if size == 0:
            return
        k_v, k_a = gather_detached(embedded["k_v"])[-size:], gather_detached(embedded["k_a"])[-size:]
        index = (self.queue_ptr + torch.arange(len(k_v), device=k_v.device)) % size
        self.queue_video[index] = k_v.to(self.queue_video.dtype)
        self.queue_audio[index] = k_a.to(self.queue_audio.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(k_v)) % size)
        self.queue_filled.copy_((self.queue_filled + len(k_v)).clamp(max=size))

    # ---- embeddings: queries, keys, transformed keys, features for the task heads --------------------------------

    def embed(self, batch: dict, reuse: dict | None = None) -> dict:
        video, audio = batch["video"], batch["audio"]  # [B, N, 3, T, H, W], [B, N, 1, mels, frames]
        b, n = video.shape[:2]
        f_v, f_a = self.video(flat(video)), self.audio(flat(audio))
        out = {"z_v": F.normalize(self.video_proj(f_v), dim=1), "z_a": F.normalize(self.audio_proj(f_a), dim=1)}
        out.update(self.task_logits(f_v, f_a, batch, b, n))
        if reuse is not None and "k_v" in reuse:
            keys = {name: reuse[name] for name in reuse if name.startswith("k_")}
        else:
            keys = self.keys(video, audio, out)
        return out | keys

    @torch.no_grad()
    def keys(self, video, audio, out) -> dict[str, torch.Tensor]:
        if self.config.queue_source == "momentum":
            k_v, k_a = self.key_embedding("video", flat(video)), self.key_embedding("audio", flat(audio))
        else:
            k_v, k_a = out["z_v"].detach(), out["z_a"].detach()
        keys = {"k_v": k_v, "k_a": k_a}
        for transform in self.config.temporal_negatives:
            keys[f"k_{transform}"] = self.key_embedding("video", time_transform(flat(video), transform))
        return keys

    def key_embedding(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised projection by the momentum encoder (or, for online_stopgrad, the online one)."""
        if self.config.queue_source == "momentum":
            encoder, projection = self.key[modality], self.key[f"{modality}_proj"]
        else:
            encoder, projection = getattr(self, modality), getattr(self, f"{modality}_proj")
        return F.normalize(projection(encoder(x)), dim=1)

    def objective(self, meta: dict, embedded: dict):
        terms: dict[str, torch.Tensor] = {}
        loss_con = self.contrast(meta, embedded, terms)
        loss_temp = self.temporal_tasks(meta, embedded, terms)
        speeds = flat(meta["speed"].unsqueeze(-1)).squeeze(-1)
        for index, speed in enumerate(self.config.speeds):
            terms[f"speed_share_{speed}"] = (speeds == index).float().mean()
        terms["con"], terms["temp"] = loss_con, loss_temp
        return loss_con + self.config.lambda_temp * loss_temp, detached(terms)

    # ---- contrast ------------------------------------------------------------------------------------------

    def contrast(self, meta, embedded, terms) -> torch.Tensor:
        cfg = self.config
        b, n = meta["speed"].shape[:2]
        same_video, is_self = self.pair_masks(meta, b, n)
        k_v, k_a = gather_detached(embedded["k_v"]), gather_detached(embedded["k_a"])
        transformed = [gather_detached(embedded[f"k_{t}"]) for t in cfg.temporal_negatives]
        extra_video = torch.cat(transformed) if transformed else k_v[:0]
        queues = {"video": self.queue_video.clone(), "audio": self.queue_audio.clone()}
        clip_pair = self.other_clip_masks(meta, same_video, is_self)
        va_positive = is_self if cfg.va_positives == "aligned_only" else same_video  # the same row: its own clip
        tau_vv, tau_va = cfg.tau_vv or cfg.tau, cfg.tau_va or cfg.tau
        own = {"video": k_v, "audio": k_a}

        def loss(query, query_modality, key_modality, positive, candidate, extra, tau):
            keys = own[key_modality]
            return self.multi_positive(query, keys, extra, queues[key_modality], positive, candidate,
                                       own[query_modality], keys, tau)

        losses = {}
        if "vv" in cfg.pairs:
            losses["vv"] = loss(embedded["z_v"], "video", "video", clip_pair, ~is_self, extra_video, tau_vv)
        if "va" in cfg.pairs:
            everything = torch.ones_like(is_self)
            losses["va"] = (loss(embedded["z_v"], "video", "audio", va_positive, everything, k_a[:0], tau_va)
                            + loss(embedded["z_a"], "audio", "video", va_positive, everything, extra_video, tau_va)) / 2
        if "aa" in cfg.pairs:
            losses["aa"] = loss(embedded["z_a"], "audio", "audio", clip_pair, ~is_self, k_a[:0], tau_vv)
        terms.update(losses)
        terms["same_video_negatives"] = (same_video & ~clip_pair & ~is_self).float().sum(1).mean()
        return torch.stack(list(losses.values())).sum() if losses else embedded["z_v"].sum() * 0

    def pair_masks(self, meta, b: int, n: int):
        """[B*N, G*B*N] masks of this rank's clips against the global batch: same video, and itself (in the other
        modality's keys: its own clip's)."""
        device = meta["speed"].device
        rows = own_rows(b * n, device)
        global_rows = torch.arange(world()[1] * b * n, device=device)
        same_video = (rows // n).unsqueeze(1) == (global_rows // n).unsqueeze(0)
        return same_video, rows.unsqueeze(1) == global_rows.unsqueeze(0)

    def other_clip_masks(self, meta, same_video, is_self):
        """Which clips of the global batch are a query's positives within its modality: its video's other
        clips; with `same_video = "relabel"` only those at its speed and direction."""
        positive = same_video & ~is_self
        if self.config.same_video == "relabel":
            for key in ("speed", "direction"):
                local = flat(meta[key].unsqueeze(-1)).squeeze(-1)
                positive &= local.unsqueeze(1) == gather_detached(local).unsqueeze(0)
        return positive

    def multi_positive(self, query, keys, extra, queue, positive, candidate, own_keys, partner_keys, tau) -> torch.Tensor:
        """Multi-positive InfoNCE of `query` over batch keys + extra negatives + queue (+ MoCHi mixtures)."""
        cfg = self.config
        query = query.float()
        logits = [query @ keys.float().t() / tau, query @ extra.float().t() / tau]
        positives = [positive, torch.zeros(len(query), len(extra), dtype=torch.bool, device=query.device)]
        candidates = [candidate, torch.ones_like(positives[1])]
        if cfg.queue_size:
            queue = queue.float()
            queue_logits = query @ queue.t() / tau
            filled = (torch.arange(cfg.queue_size, device=query.device) < self.queue_filled).unsqueeze(0)
            queue_logits = queue_logits.masked_fill(~filled, float("-inf"))
            neighbours = self.neighbours(query, positive, own_keys, partner_keys, queue, filled)
            logits.append(queue_logits)
            positives.append(neighbours)
            candidates.append(filled.expand_as(queue_logits))
            if cfg.hard_negatives == "mochi":
                mixed = mochi_negatives(query, queue, queue_logits.masked_fill(neighbours, float("-inf")), cfg)
                logits.append(mixed / tau)
                positives.append(torch.zeros_like(mixed, dtype=torch.bool))
                candidates.append((self.queue_filled >= cfg.mochi_from).expand_as(mixed))
        return multi_positive_nce(torch.cat(logits, 1), torch.cat(positives, 1), torch.cat(candidates, 1))

    @torch.no_grad()
    def neighbours(self, query, positive, own_keys, partner_keys, queue, filled) -> torch.Tensor:
        """[R, queue] the nn_k queue entries nearest to each row's `nn_source` embedding: the query, its own key,
        or its (first) positive's key as NNCLR does (none before warm-up)."""
        cfg = self.config
        mask = torch.zeros(len(query), cfg.queue_size, dtype=torch.bool, device=query.device)
        if not cfg.nn_k:
            return mask
        if cfg.nn_source == "query":
            source = query
        elif cfg.nn_source == "key":
            source = own_keys.float()[own_rows(len(query), query.device)]
        else:
            source = partner_keys.float()[positive.float().argmax(1)]
        scores = (source.float() @ queue.t()).masked_fill(~filled, float("-inf"))
        top = scores.topk(min(cfg.nn_k, cfg.queue_size), dim=1).indices
        warm = self.steps >= cfg.nn_warmup_steps  # a tensor: no Python branch on it (one compiled graph)
        return mask.scatter(1, top, True) & filled & warm

    # ---- temporal tasks ------------------------------------------------------------------------------------

    def task_logits(self, f_v, f_a, batch, b: int, n: int) -> dict[str, torch.Tensor]:
        """The task heads' logits, per clip (speed, direction) or per sample (orders): part of `embed`, so that the
        objective has no parameters of its own and accumulation counts each head's gradient once."""
        cfg = self.config
        out = {}
        for modality, features in (("video", f_v), ("audio", f_a)):
            for label in ("speed", "direction"):
                if label in cfg.tasks:
                    out[f"logits_{modality}_{label}"] = self.heads[f"{modality}_{label}"](features)
            if "intra_order" in cfg.tasks:
                out[f"logits_{modality}_order"] = self.heads[f"{modality}_order"](features.view(b, n, -1)[:, :2].flatten(1))
        if "inter_order" in cfg.tasks:
            shifted = self.audio(batch["audio_shifted"])
            out["logits_av_order"] = self.heads["av_order"](torch.cat([f_v.view(b, n, -1)[:, 0], shifted], 1))
        return out

    def temporal_tasks(self, meta, embedded, terms) -> torch.Tensor:
        cfg = self.config
        losses = []

        def task(name, kind, logits, target):
            """Cross-entropy over the rows with a label (-1: none, e.g. a clip too short for the order task)."""
            valid = (target >= 0).float()
            count = valid.sum().clamp(min=1)
            ce = F.cross_entropy(logits.float(), target.clamp(min=0), reduction="none")
            losses.append(cfg.task_weights.get(kind, 1.0) * (ce * valid).sum() / count)
            hits = (logits.detach().argmax(1) == target).float()
            terms[name], terms[f"{name}_acc"] = losses[-1], (hits * valid).sum() / count

        for modality in ("video", "audio"):
            for label in ("speed", "direction"):
                if label in cfg.tasks:
                    task(f"{modality}_{label}", label, embedded[f"logits_{modality}_{label}"], flat(meta[label]))
            if "intra_order" in cfg.tasks:
                first = (meta["start"][:, 0] < meta["start"][:, 1]).long()
                task(f"{modality}_order", "intra_order", embedded[f"logits_{modality}_order"], first)
        if "inter_order" in cfg.tasks:
            task("av_order", "inter_order", embedded["logits_av_order"], meta["xorder"])
        return torch.stack(losses).sum() if losses else embedded["z_v"].sum() * 0


_ONLINE = ("video", "audio", "video_proj", "audio_proj")


def time_transform(clips: torch.Tensor, transform: str) -> torch.Tensor:
    """[M, 3, T, H, W] clips under a temporal transformation of their own window: reversed, re-speeded (the
    first half played at half speed) or frame-shuffled (one random order per clip)."""
    t = clips.shape[2]
    if transform == "reverse":
        return clips.flip(2)
    if transform == "respeed":
        return clips[:, :, torch.arange(t, device=clips.device) // 2]
    order = torch.argsort(torch.rand(len(clips), t, device=clips.device), dim=1)
    return clips.gather(2, order.view(len(clips), 1, t, 1, 1).expand_as(clips))


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
