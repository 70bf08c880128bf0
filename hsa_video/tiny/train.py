"""Training of the built-in tiny model, resumable across sessions.

Stage 1 trains the per-frame autoencoder on random frames of the domain and measures its latent
statistics. Stage 2 trains the text encoder and the Wan transformer together with rectified flow:
x_σ = (1 − σ)·x₀ + σ·ε, target v = ε − x₀, σ from a logit-normal shifted towards noise like the
sampler's schedule, object pixels weighted up in the loss, captions dropped 10% of the time for CFG,
and half of the clips with their first latent frame held clean at σ = 0 (per-token timesteps; that
frame's loss is masked) so the same weights do image-to-video. AdamW with warm-up and cosine decay; an
EMA of the weights is what gets exported.

The full training state (optimiser, EMA, step, data RNG) is saved beside the exported weights in
``train_state.pt`` (not shipped); without it, ``--resume`` starts from the exported weights with a
fresh optimiser.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hsa_core.models.tiny.model import WEIGHTS_DIR, TinyConfig, TinyVideoModel
from hsa_core.schedule import shift_sigmas

from .domain import object_masks, render, sample_spec


@dataclass
class TrainSettings:
    out: Path = WEIGHTS_DIR
    state: Path | None = None  # defaults to <out>/train_state.pt
    minutes: float = 60.0  # wall-clock budget of stage 2 in this invocation
    max_steps: int | None = None
    batch: int = 16
    lr: float = 1e-3
    warmup_steps: int = 200
    total_steps: int = 20000  # length of the cosine schedule (across resumes)
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    first_frame_probability: float = 0.5
    object_loss_weight: float = 0.0  # extra loss weight on object pixels: a curriculum stage, see object_loss_weights
    sigma_shift: float = 3.0  # training σ = shift·s / (1 + (shift − 1)·s), s logit-normal; 1 = no shift
    autoencoder_steps: int = 800
    autoencoder_batch: int = 32
    checkpoint_minutes: float = 5.0
    seed: int = 0
    threads: int = 2
    resume: bool = False
    device: str = "cpu"  # "cuda" trains on a GPU; weights are always exported on the CPU


def batch_of_clips(rng: np.random.Generator, count: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """(B, 3, F, S, S) float clips in [0, 1], their captions and (B, F, S, S) bool object masks, from the
    training split."""
    specs = [sample_spec(rng, "train") for _ in range(count)]
    clips = np.stack([render(s) for s in specs])  # (B, F, S, S, 3)
    masks = np.stack([object_masks(s) for s in specs])
    clips = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).contiguous()
    return clips, [s.caption for s in specs], torch.from_numpy(masks)


def object_loss_weights(masks: torch.Tensor, latent_size: int, extra: float) -> torch.Tensor:
    """(B, 1, F, h, w) per-latent-pixel loss weights: 1 + ``extra`` × the share of object pixels.

    Objects cover ~10% of a frame, and a wrong motion direction or shape costs only their pixels, so
    under a uniform loss the model spends its capacity on backgrounds and leaves the object's motion
    to the noise. The mask is grown by a pixel first: the rim, where colours blend, is object too.

    The weights depend on the clean clip, so the loss's minimiser is no longer the posterior mean: it
    leans towards "object here" wherever that is uncertain, and a model trained only this way draws
    bloated objects over the background. Use it as a stage (it taught the 7 755-step model to follow
    the caption's colour and direction), then train on with ``extra = 0`` to remove the bias.
    """
    b, f, size, _ = masks.shape
    grown = F.max_pool2d(masks.float().view(b * f, 1, size, size), 3, stride=1, padding=1)
    share = F.adaptive_avg_pool2d(grown, latent_size).view(b, 1, f, latent_size, latent_size)
    return 1 + extra * share


AE_LR = 2e-3
STALL_SECONDS = 30.0  # no step takes this long on its own: a longer one was paused, and counts this much


def train_autoencoder(model: TinyVideoModel, settings: TrainSettings, log) -> None:
    ae = model.autoencoder.train()
    optimizer = torch.optim.AdamW(ae.parameters(), lr=AE_LR, weight_decay=0.0)
    rng = np.random.default_rng(settings.seed + 1)
    frames_per_clip = 4
    start = time.perf_counter()
    for step in range(settings.autoencoder_steps):
        clips, _, _ = batch_of_clips(rng, settings.autoencoder_batch // frames_per_clip)
        clips = clips.to(settings.device)
        frames = clips[:, :, torch.randperm(clips.shape[2])[:frames_per_clip]]  # (b, 3, 4, S, S)
        lr = AE_LR * 0.5 * (1 + math.cos(math.pi * step / settings.autoencoder_steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        z = ae.encode(frames)
        # the decoder must tolerate imperfect generated codes: noise at 10% of each channel's spread
        noisy = z + 0.1 * z.detach().std(dim=(0, 2, 3, 4), keepdim=True) * torch.randn_like(z)
        b, c, f, h, w = noisy.shape
        decoded = (ae.decoder(noisy.transpose(1, 2).reshape(b * f, c, h, w)) + 1) / 2
        target = frames.transpose(1, 2).reshape(b * f, 3, *frames.shape[-2:])
        loss = F.mse_loss(decoded, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == settings.autoencoder_steps - 1:
            log({"stage": "autoencoder", "step": step, "loss": loss.item(), "seconds": time.perf_counter() - start})
    ae.eval()
    with torch.no_grad():  # latent statistics for normalisation, like Wan's latents_mean / latents_std
        ae.latents_mean.zero_()
        ae.latents_std.fill_(1)
        clips, _, _ = batch_of_clips(rng, 64)
        z = ae.encode(clips.to(settings.device))
        ae.latents_mean.copy_(z.mean(dim=(0, 2, 3, 4)))
        ae.latents_std.copy_(z.std(dim=(0, 2, 3, 4)))


def flow_matching_loss(model: TinyVideoModel, clips, captions, masks, settings: TrainSettings,
                       rng: torch.Generator):
    with torch.no_grad():
        x0 = model.autoencoder.encode(clips)  # (B, C, F, h, w)
    b = x0.shape[0]
    dropped = torch.rand(b, generator=rng) < settings.caption_dropout
    captions = ["" if drop else c for c, drop in zip(captions, dropped.tolist())]
    text = model.text_encoder(model.tokenizer(captions).to(x0.device))

    device = x0.device
    # logit-normal, shifted like the sampler's schedule: inference (shift 3) spends half its steps at
    # σ > 0.75, where the layout and the objects' motion are decided; an unshifted logit-normal puts
    # only 14% of training samples there
    sigma = shift_sigmas(torch.sigmoid(torch.randn(b, generator=rng)), settings.sigma_shift).to(device)
    noise = torch.randn(x0.shape, generator=rng).to(device)
    s = sigma.view(b, 1, 1, 1, 1)
    x = (1 - s) * x0 + s * noise
    target = noise - x0

    _, _, f, h, w = x0.shape
    tokens_per_frame = (h // model.config.patch) * (w // model.config.patch)
    first_clean = (torch.rand(b, generator=rng) < settings.first_frame_probability).to(device)
    x[first_clean, :, 0] = x0[first_clean, :, 0]
    timestep = sigma[:, None].expand(b, f * tokens_per_frame).clone()  # (B, N) per-token σ
    timestep[first_clean, :tokens_per_frame] = 0
    weight = object_loss_weights(masks, h, settings.object_loss_weight).to(device)
    weight[first_clean, :, 0] = 0  # no loss on frames that are given

    prediction = model.transformer(
        hidden_states=x, timestep=timestep * 1000, encoder_hidden_states=text, return_dict=False
    )[0]
    return ((prediction - target) ** 2 * weight).sum() / (weight.sum() * x0.shape[1])


def train(settings: TrainSettings) -> dict:
    torch.set_num_threads(settings.threads)
    out = Path(settings.out)
    state_path = Path(settings.state or out / "train_state.pt")
    log_path = out / "train_log.jsonl"
    out.mkdir(parents=True, exist_ok=True)

    def log(record: dict) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
        with log_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(json.dumps(record), file=sys.stderr, flush=True)

    state = None
    if settings.resume and state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model = TinyVideoModel.load(out)
        log({"event": "resume", "from": str(state_path), "step": state["step"]})
    elif settings.resume and (out / "tiny_config.json").exists():
        model = TinyVideoModel.load(out)
        log({"event": "resume", "from": str(out), "note": "no training state: fresh optimiser and EMA"})
    else:
        if log_path.exists():
            log_path.unlink()
        model = TinyVideoModel.create(TinyConfig(), seed=settings.seed).to(settings.device)
        log({"event": "start", "config": model.config.transformer_config()})
        train_autoencoder(model, settings, log)

    model.to(settings.device)
    trainable = list(model.transformer.parameters()) + list(model.text_encoder.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = [p.detach().clone() for p in trainable]
    step, clips_seen, seconds_before = 0, 0, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        for target, saved in zip(trainable, state["weights"]):
            target.data.copy_(saved)
        ema = [average.to(settings.device) for average in state["ema"]]
        step, clips_seen, seconds_before = state["step"], state["clips_seen"], state["seconds"]
    elif settings.resume and (out / "tiny_config.json").exists():
        shipped = json.loads((out / "tiny_config.json").read_text()).get("training", {})
        step, clips_seen, seconds_before = (shipped.get(k, 0) for k in ("steps", "clips_seen", "seconds"))

    data_rng = np.random.default_rng(settings.seed + 1000 + step)
    torch_rng = torch.Generator().manual_seed(settings.seed + 2000 + step)
    model.transformer.train()
    model.text_encoder.train()
    start = time.perf_counter()
    last_checkpoint = last_log = last_step_end = start
    trained_seconds = 0.0  # wall time spent training, pauses (SIGSTOP, a suspended machine) left out
    smoothed = None
    stop_step = None if settings.max_steps is None else step + settings.max_steps

    def export() -> dict:
        elapsed = seconds_before + trained_seconds
        info = {"steps": step, "clips_seen": clips_seen, "seconds": round(elapsed, 1), "batch": settings.batch,
                "lr": settings.lr, "total_steps": settings.total_steps, "ema_decay": settings.ema_decay,
                "object_loss_weight": settings.object_loss_weight, "sigma_shift": settings.sigma_shift}
        exported = copy.deepcopy(model).to("cpu")
        exported_params = list(exported.transformer.parameters()) + list(exported.text_encoder.parameters())
        for target, average in zip(exported_params, ema):
            target.data.copy_(average.cpu())
        exported.save(out, training=info)
        torch.save({"optimizer": optimizer.state_dict(), "weights": [p.detach() for p in trainable], "ema": ema,
                    "step": step, "clips_seen": clips_seen, "seconds": elapsed}, state_path)
        return info

    while True:
        elapsed_minutes = (time.perf_counter() - start) / 60
        if elapsed_minutes >= settings.minutes or (stop_step is not None and step >= stop_step):
            break
        lr = settings.lr * min(1.0, (step + 1) / settings.warmup_steps)
        progress = min(1.0, step / settings.total_steps)
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr
        clips, captions, masks = batch_of_clips(data_rng, settings.batch)
        clips = clips.to(settings.device)
        loss = flow_matching_loss(model, clips, captions, masks, settings, torch_rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        decay = min(settings.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in trainable], 1 - decay)
        step += 1
        clips_seen += settings.batch
        now = time.perf_counter()
        trained_seconds += min(now - last_step_end, STALL_SECONDS)
        last_step_end = now
        smoothed = loss.item() if smoothed is None else 0.98 * smoothed + 0.02 * loss.item()
        if step % 25 == 0:
            now = time.perf_counter()
            log({"stage": "transformer", "step": step, "loss": round(loss.item(), 5),
                 "loss_smoothed": round(smoothed, 5), "lr": lr,
                 "clips_per_second": round(settings.batch * 25 / (now - last_log), 2)})
            last_log = now
        if (time.perf_counter() - last_checkpoint) / 60 >= settings.checkpoint_minutes:
            export()
            last_checkpoint = time.perf_counter()
    info = export()
    log({"event": "stop", **info})
    return info
