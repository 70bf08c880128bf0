"""``hsa-video generate``: one clip from a prompt (and optionally a first frame), written as MP4."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help='e.g. "a red circle moving left on a plain blue background"')
    parser.add_argument("--image", type=Path, help="first frame (any image file; resized to the model's size): I2V")
    parser.add_argument("--budget", type=float, default=1.0, help="HSA compute budget in (0, 1] (default 1.0)")
    parser.add_argument("--steps", type=int, default=40, help="denoising steps (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's, 4.0)")
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--out", type=Path, default=Path("clip.mp4"), help="MP4 path (default clip.mp4)")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--upscale", type=int, default=4, help="nearest-neighbour upscaling for viewing (default 4)")
    parser.add_argument("--weights", type=Path, default=None, help="tiny-model weights directory")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from hsa_core import HSASampler
    from hsa_core.media import read_image, upscale, write_mp4
    from hsa_core.tiny.model import WEIGHTS_DIR, TinyVideoModel

    torch.set_num_threads(args.threads)
    sampler = HSASampler(args.budget)  # validates the budget before loading anything
    model = TinyVideoModel.load(args.weights or WEIGHTS_DIR)
    unknown = model.tokenizer.unknown_words(args.prompt)
    if unknown:
        print(f"note: words outside the tiny model's vocabulary are ignored: {', '.join(unknown)}", file=sys.stderr)
    image = read_image(args.image, model.config.size) if args.image else None
    start = time.perf_counter()
    with tqdm(total=args.steps, unit="step", desc="generate", file=sys.stderr) as bar:
        clip, result = model.generate(
            args.prompt,
            sampler,
            image=image,
            steps=args.steps,
            guidance_scale=args.guidance,
            seed=args.seed,
            negative_prompt=args.negative_prompt,
            callback=lambda stats: bar.update(),
        )
    seconds = time.perf_counter() - start
    write_mp4(upscale(clip, args.upscale), args.out, fps=args.fps)
    print(
        f"budget {args.budget:g}  achieved compute fraction {result.achieved_compute_fraction:.3f}  "
        f"token fraction {result.token_fraction:.3f}  wall time {seconds:.2f} s  → {args.out}"
    )
    return 0
