"""``hsa-video generate``: one clip from a prompt (and optionally a first frame), written as MP4.

The built-in tiny model by default; ``--model <name> --model-path <dir>`` runs a registered real
checkpoint (``hsa_core.models``) from a local diffusers-format directory, with its presets for
everything not given on the command line. LTX-2 clips carry their generated soundtrack (AAC).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

TINY = "tiny"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help='e.g. "a red circle moving left on a plain blue background"')
    parser.add_argument("--image", type=Path, help="first frame (any image file; resized to the model's size): I2V")
    parser.add_argument("--budget", type=float, default=1.0, help="HSA compute budget in (0, 1] (default 1.0)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--out", type=Path, default=Path("clip.mp4"), help="MP4 path (default clip.mp4)")
    parser.add_argument("--fps", type=int, default=None,
                        help="frames per second (default: the model's); LTX-2 generates for this rate")
    parser.add_argument("--upscale", type=int, default=None,
                        help="nearest-neighbour upscaling for viewing (default 4 for the tiny model, else 1)")
    parser.add_argument("--weights", type=Path, default=None, help="tiny-model weights directory")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    real = parser.add_argument_group("real checkpoints (see docs/models.md)")
    real.add_argument("--model", default=TINY, help="tiny (default) or a registered model, e.g. wan2.1-t2v-1.3b")
    real.add_argument("--model-path", type=Path, default=None, help="the model's local diffusers-format directory")
    real.add_argument("--height", type=int, default=None, help="pixels (default: the model's preset)")
    real.add_argument("--width", type=int, default=None, help="pixels (default: the model's preset)")
    real.add_argument("--frames", type=int, default=None, help="video frames, 4k + 1 (default: the model's preset)")
    real.add_argument("--shift", type=float, default=None, help="schedule shift (default: the model's preset)")
    real.add_argument("--guidance-2", type=float, default=None,
                      help="CFG scale of the low-noise expert of two-expert models (default: the model's)")
    real.add_argument("--audio-guidance", type=float, default=None,
                      help="CFG scale of LTX-2's audio tokens (default: the model's)")
    real.add_argument("--kv-cache-dtype", default=None, help="bfloat16, float16, float8_e4m3fn or float32 "
                      "(default: the model's dtype); a lower precision shrinks the cache HSA keeps below budget 1")
    real.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    real.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None,
                      help="transformer and text-encoder dtype (default: bfloat16 on GPU, float32 on CPU)")


def run(args: argparse.Namespace) -> int:
    import torch

    from hsa_core import ConfigError
    from hsa_core.models import available_models

    torch.set_num_threads(args.threads)
    if args.model == TINY:
        return run_tiny(args)
    if args.model not in available_models():
        raise ConfigError(f"unknown model {args.model!r}; known models: {', '.join([TINY, *available_models()])}")
    return run_checkpoint(args)


def run_tiny(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hsa_core import ConfigError, HSASampler
    from hsa_core.media import read_image, upscale, write_mp4
    from hsa_core.models.tiny.model import WEIGHTS_DIR, TinyVideoModel

    if args.model_path is not None:
        raise ConfigError("--model-path is for real checkpoints (--model <name>); the tiny model takes --weights")
    sampler = HSASampler(args.budget)  # validates the budget before loading anything
    model = TinyVideoModel.load(args.weights or WEIGHTS_DIR)
    unknown = model.tokenizer.unknown_words(args.prompt)
    if unknown:
        print(f"note: words outside the tiny model's vocabulary are ignored: {', '.join(unknown)}", file=sys.stderr)
    image = read_image(args.image, model.config.size) if args.image else None
    steps = args.steps or model.config.steps
    start = time.perf_counter()
    with tqdm(total=steps, unit="step", desc="generate", file=sys.stderr) as bar:
        clip, result = model.generate(
            args.prompt,
            sampler,
            image=image,
            steps=steps,
            guidance_scale=args.guidance,
            seed=args.seed,
            negative_prompt=args.negative_prompt,
            callback=lambda stats: bar.update(),
        )
    seconds = time.perf_counter() - start
    write_mp4(upscale(clip, args.upscale or 4), args.out, fps=args.fps or 8)
    print(
        f"budget {args.budget:g}  achieved compute fraction {result.achieved_compute_fraction:.3f}  "
        f"token fraction {result.token_fraction:.3f}  wall time {seconds:.2f} s  → {args.out}"
    )
    return 0


def run_checkpoint(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from hsa_core import ConfigError, HSAConfig, HSASampler
    from hsa_core.media import upscale, write_mp4
    from hsa_core.models import get_model_spec, load_model

    if args.model_path is None:
        raise ConfigError(f"--model-path is required for {args.model}: the directory of its diffusers-format weights")
    if args.weights is not None:
        raise ConfigError("--weights is for the tiny model; real checkpoints take --model-path")
    spec = get_model_spec(args.model)
    if args.guidance_2 is not None and spec.family == "ltx2":
        raise ConfigError(f"--guidance-2 is for two-expert Wan models; {args.model} has one transformer")
    if args.audio_guidance is not None and spec.family != "ltx2":
        raise ConfigError(f"--audio-guidance is for LTX-2; {args.model} generates no audio")
    # validate the sampler settings before loading gigabytes
    sampler = HSASampler(args.budget, HSAConfig(kv_cache_dtype=args.kv_cache_dtype))
    image = None
    if args.image:
        from PIL import Image

        with Image.open(args.image) as file:
            image = file.convert("RGB")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.model, args.model_path, device, getattr(torch, args.dtype) if args.dtype else None)
    family_options = (dict(audio_guidance_scale=args.audio_guidance, frame_rate=args.fps) if spec.family == "ltx2"
                      else dict(guidance_scale_2=args.guidance_2))
    job = model.prepare(
        args.prompt, negative_prompt=args.negative_prompt, image=image, height=args.height, width=args.width,
        num_frames=args.frames, steps=args.steps, shift=args.shift, guidance_scale=args.guidance, seed=args.seed,
        **family_options,
    )
    estimate = model.kv_cache_estimate(job, sampler)
    print(f"K/V cache: {estimate.describe()}" if estimate else
          "K/V cache: none (budget 1 computes every token at every step)", file=sys.stderr)

    start = time.perf_counter()
    with tqdm(total=job.schedule.steps, unit="step", desc="generate", file=sys.stderr) as bar:
        result = model.denoise(job, sampler, callback=lambda stats: bar.update())

    def on_fallback(how: str) -> None:
        print(f"VAE decode ran out of memory; retrying {how}", file=sys.stderr)

    try:
        clip = model.decode_tokens(job, result.tokens, on_fallback)
    except Exception:
        saved = args.out.with_suffix(".latents.pt")
        saved.write_bytes(model.latents_bytes(job, result.tokens))
        print(f"decoding failed; the sampled latents are in {saved} (torch.load)", file=sys.stderr)
        raise
    seconds = time.perf_counter() - start
    fps = args.fps or clip.fps
    write_mp4(upscale(clip.frames, args.upscale or 1), args.out, fps=fps, audio=clip.audio,
              sample_rate=clip.sample_rate)
    settings = job.settings
    print(
        f"{args.model} {settings['width']}×{settings['height']}×{settings['num_frames']}  budget {args.budget:g}  "
        f"achieved compute fraction {result.achieved_compute_fraction:.3f}  token fraction "
        f"{result.token_fraction:.3f}  wall time {seconds:.2f} s  decoded on {clip.decoded_with}  → {args.out}"
    )
    return 0
