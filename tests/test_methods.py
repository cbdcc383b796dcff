"""Every method: forward and backward in float32 and bfloat16 autocast on tiny inputs, every named term present;
the switches build and run; temporal-av's queue, momentum encoder and sample-dependent pairs; its temporal heads
learn labels that the input carries and stay at chance on labels it does not."""
import dataclasses

import numpy as np
import pytest
import torch

import avcl.methods as methods
from avcl.registry import UnknownName
from tests.support.batches import random_batch

TINY = {"width": 4, "proj_hidden": 32}
TERMS = {
    "xmodal": {"xmodal", "acc_v2a"},
    "simclr": {"nt_xent", "acc"},
    "avcl": {"xm", "acc_v2a", "ff", "acc_ff", "beta_video", "cgra"},
    "tcgl": {"intra", "inter", "order_ce", "order_acc"},
    "temporal-av": {"con", "temp", "vv", "va", "same_video_negatives", "av_order", "av_order_acc"}
    | {f"{m}_{t}{acc}" for m in ("video", "audio") for t in ("speed", "direction", "order") for acc in ("", "_acc")}
    | {f"speed_share_{k}" for k in (1, 2, 4, 8)},
}


def tiny(name: str, **overrides):
    config = methods.default_config(name)
    fields = {f.name for f in dataclasses.fields(config)}
    extra = {"queue_size": 64} if name == "temporal-av" else {}
    return methods.build(name, dataclasses.replace(config, **{k: v for k, v in {**TINY, **extra, **overrides}.items() if k in fields}))


def batch_for(method, batch=4, frames=8):
    spec = method.view_spec()
    frames = spec.frames if method.name == "tcgl" else frames
    return random_batch(dataclasses.replace(spec, frames=frames), batch=batch, size=32)


def test_registry_lists_every_method():
    assert methods.names() == sorted(TERMS)
    with pytest.raises(UnknownName, match="unknown method 'moco'"):
        methods.build("moco")


@pytest.mark.parametrize("name", sorted(TERMS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_backward(name, dtype):
    torch.manual_seed(0)
    method = tiny(name)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        loss, terms = method(batch_for(method))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert set(terms) == TERMS[name]
    assert all(torch.isfinite(v) and not v.requires_grad for v in terms.values())
    loss.backward()
    trainable = [(k, p) for k, p in method.named_parameters() if p.requires_grad]
    missing = [k for k, p in trainable if p.grad is None]
    assert not missing, missing
    assert set(method.encoders()) == ({"video"} if name in ("simclr", "tcgl") else {"video", "audio"})


SWITCHES = [
    ("avcl", {"fusion": "none"}), ("avcl", {"fusion": "concat_mean"}), ("avcl", {"modality_gate": "equal"}),
    ("avcl", {"cgra": False}), ("avcl", {"cgra_guided": True}), ("avcl", {"selfcl_fused_term": False}),
    ("tcgl", {"stkd": "dct_highpass"}), ("tcgl", {"stkd": "none"}), ("tcgl", {"view1_augment": True}),
    ("tcgl", {"intra_edge_mask_scope": "per_sample"}), ("tcgl", {"intra_edges": "full"}),
    ("tcgl", {"video_backbone": "c3d"}), ("tcgl", {"snippets": 4}), ("tcgl", {"asop_dropout": 0.1}),
    ("temporal-av", {"queue_source": "online_stopgrad"}), ("temporal-av", {"hard_negatives": "mochi", "mochi_from": 8}),
    ("temporal-av", {"pairs": ("vv", "va", "aa")}), ("temporal-av", {"tasks": ("speed",)}),
    ("temporal-av", {"nn_k": 0, "queue_size": 0}), ("temporal-av", {"same_video": "relabel"}),
    ("temporal-av", {"temporal_negatives": ()}), ("temporal-av", {"video_backbone": "r3d_18", "audio_backbone": "conv2d_10"}),
    ("temporal-av", {"va_positives": "same_video"}), ("temporal-av", {"nn_source": "key"}),
    ("temporal-av", {"nn_source": "positive_key"}), ("temporal-av", {"nn_warmup_steps": 1}),
    ("temporal-av", {"tau_vv": 0.2, "tau_va": 0.05}), ("temporal-av", {"task_weights": {"speed": 0.5}}),
    ("temporal-av", {"audio_window": "seconds", "audio_speed": "box"}), ("tcgl", {"video_backbone": "r2plus1d_vcop"}),
    ("avcl", {"selfcl_views": "two_clips"}),
]


@pytest.mark.parametrize("name, overrides", SWITCHES, ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in SWITCHES])
def test_switches(name, overrides):
    method = tiny(name, **overrides)
    for _ in range(2):  # the second step sees a non-empty queue
        loss, terms = method(batch_for(method))
        assert torch.isfinite(loss)
        loss.backward()


def test_bad_switch_values_are_named():
    with pytest.raises(ValueError, match="fusion must be amfm, concat_mean or none"):
        methods.default_config("avcl").__class__(fusion="sum")
    with pytest.raises(ValueError, match="tasks: unknown \\['spin'\\]"):
        methods.default_config("temporal-av").__class__(tasks=("spin",))


# ---- temporal-av: queue, momentum encoder, pairs -----------------------------------------------------------

def test_queue_fills_in_order_and_wraps():
    method = tiny("temporal-av", queue_size=12)
    batch = batch_for(method, batch=4)  # 8 clips per step
    for step in range(1, 3):
        method(batch)
        assert int(method.queue_filled) == min(12, 8 * step) and int(method.queue_ptr) == (8 * step) % 12
    method.eval()
    filled = method.queue_video.clone()
    method(batch)
    assert torch.equal(method.queue_video, filled)  # evaluation never enqueues


def test_momentum_encoder_follows_the_online_one():
    method = tiny("temporal-av", momentum=0.9)
    key_before = [p.clone() for p in method.key.parameters()]
    online = [p for name in ("video", "audio", "video_proj", "audio_proj") for p in getattr(method, name).parameters()]
    assert all(torch.equal(k, o) for k, o in zip(key_before, online))
    with torch.no_grad():
        for p in online:
            p.add_(1.0)
    method(batch_for(method))
    for before, after, o in zip(key_before, method.key.parameters(), online):
        torch.testing.assert_close(after, 0.9 * before + 0.1 * o)
    assert not any(p.requires_grad for p in method.key.parameters())


def test_sample_dependent_pairs():
    """By default a video's other clip is always a positive; `same_video = "relabel"` (the old preset, an
    ablation) keeps it only when speed and direction agree."""
    method = tiny("temporal-av")
    batch = batch_for(method, batch=2)
    batch["speed"] = torch.tensor([[0, 0], [0, 2]])
    batch["direction"] = torch.tensor([[0, 1], [1, 1]])
    same, itself = method.pair_masks(batch, 2, 2)
    assert same.tolist() == [[True, True, False, False], [True, True, False, False],
                             [False, False, True, True], [False, False, True, True]]
    assert torch.equal(itself, torch.eye(4, dtype=torch.bool))
    assert torch.equal(method.other_clip_masks(batch, same, itself), same & ~itself)
    relabelled = tiny("temporal-av", same_video="relabel").other_clip_masks(batch, same, itself)
    assert not relabelled.any()  # sample 0 differs in direction, sample 1 in speed


def test_every_vv_query_keeps_its_other_clip_over_sampled_plans():
    from avcl.data.views import plan_clips

    method = tiny("temporal-av")
    spec = method.view_spec()
    rng = np.random.default_rng(0)
    for _ in range(200):
        plans, _ = plan_clips(dataclasses.replace(spec, audio_seconds=1.0), 160, 16.0, rng)
        batch = {"speed": torch.tensor([[spec.speeds.index(p.speed) for p in plans]]),
                 "direction": torch.tensor([[int(p.direction < 0) for p in plans]])}
        same, itself = method.pair_masks(batch, 1, 2)
        positive = method.other_clip_masks(batch, same, itself)
        assert positive[0, 1] and positive[1, 0]


def test_each_new_switch_changes_the_loss():
    base = {"queue_size": 64, "nn_k": 2}
    reference = tiny("temporal-av", **base)
    changed = {"same_video": "relabel", "va_positives": "same_video", "nn_source": "positive_key",
               "tau_vv": 0.3, "tau_va": 0.03, "task_weights": {"speed": 3.0}, "temporal_negatives": ("reverse",),
               "nn_warmup_steps": 5}
    batch = batch_for(reference, batch=4)
    batch["speed"] = torch.tensor([[0, 1], [2, 2], [0, 3], [1, 1]])
    batch["direction"] = torch.tensor([[0, 1], [0, 0], [1, 1], [0, 1]])

    def loss_of(**overrides):
        torch.manual_seed(0)
        method = tiny("temporal-av", **base, **overrides)
        method.load_state_dict(reference.state_dict())
        method(batch)  # fill the queue
        method.eval()
        torch.manual_seed(1)
        return float(method(batch)[0].detach())

    plain = loss_of()
    for key, value in changed.items():
        assert loss_of(**{key: value}) != pytest.approx(plain, rel=1e-6), key


# ---- temporal heads learn what the input carries, and nothing else ----------------------------------------

def time_coded_batch(n: int, learnable: bool, g: torch.Generator) -> dict:
    """Clips of a bar (video) and a tone (spectrogram) moving k = speed+1 steps per frame, forwards or backwards;
    each clip's brightness is its start time, the shifted audio's is clip 0's start ∓ 0.5 (before/at/after)."""
    frames = 8
    speed, direction = torch.randint(3, (n, 2), generator=g), torch.randint(2, (n, 2), generator=g)
    start, xorder = torch.rand(n, 2, generator=g), torch.randint(3, (n,), generator=g)
    step = (speed + 1) * (1 - 2 * direction)

    def track(length, count=2, offset=None, steps=step):
        offset = torch.randint(16, (n, count), generator=g) if offset is None else offset
        return torch.nn.functional.one_hot((offset[..., None] + steps[..., None] * torch.arange(length)) % 16, 16).float()

    bar = track(frames)  # [n, 2, T, 16]
    video = start[:, :, None, None, None, None] + bar[:, :, None, :, None, :].expand(n, 2, 3, frames, 16, 16)
    audio = start[:, :, None, None, None] + track(16).transpose(-1, -2)[:, :, None]  # [n, 2, 1, 16 mels, 16 frames]
    level = start[:, 0] + (xorder.float() - 1) * 0.5
    shifted = level[:, None, None, None] + track(16, 1, steps=step[:, :1]).transpose(-1, -2)[:, 0, None]
    labels = {"speed": speed, "direction": direction, "xorder": xorder}
    if not learnable:  # the same inputs, labels of other samples
        labels = {k: v[torch.randperm(n, generator=g)] for k, v in labels.items()}
        start = start[torch.randperm(n, generator=g)]
    return {"video": video, "audio": audio, "audio_shifted": shifted, "start": start, **labels}


@pytest.mark.slow
@pytest.mark.parametrize("learnable", [True, False])
def test_temporal_heads_learn_only_learnable_labels(learnable):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    method = tiny("temporal-av", video_backbone="r2plus1d_10", width=8, speeds=(1, 2, 3), pairs=(), queue_size=0,
                  queue_source="online_stopgrad", temporal_negatives=())
    optimiser = torch.optim.Adam(method.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 3e-3, total_steps=200)
    for _ in range(200):
        loss, _ = method(time_coded_batch(32, learnable, g))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    method.eval()
    with torch.no_grad():
        _, terms = method(time_coded_batch(512, learnable, g))
    accuracies = {k: float(v) for k, v in terms.items() if k.endswith("_acc")}
    chance = {"speed": 1 / 3, "direction": 1 / 2, "order": 1 / 2, "av_order": 1 / 3}
    for key, acc in accuracies.items():
        task = "av_order" if key.startswith("av_") else key.split("_")[1]
        if learnable:
            assert acc > 0.9, (key, accuracies)
        else:
            assert abs(acc - chance[task]) < 0.1, (key, accuracies)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TERMS))
def test_one_graph_for_torch_compile(name):
    """No data-dependent Python control flow in the hot path: dynamo traces each method as one graph."""
    import torch._dynamo as dynamo

    method = tiny(name)
    explanation = dynamo.explain(method)(batch_for(method))
    assert explanation.graph_break_count == 0, [str(r.reason) for r in explanation.break_reasons]
