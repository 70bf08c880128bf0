"""``hsa-video train-tiny``: train the built-in tiny model from scratch, or resume it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None,
                        help="weights directory (default: the packaged hsa_core/models/tiny/weights)")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this run (default 60)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many transformer steps")
    parser.add_argument("--resume", action="store_true", help="continue from the weights (and state) in --out")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--total-steps", type=int, default=20000, help="length of the cosine LR schedule")
    parser.add_argument("--object-loss-weight", type=float, default=0.0,
                        help="extra loss weight on object pixels, a curriculum stage: it teaches the caption's "
                             "object attributes but biases the model towards bloated objects, so finish with 0 "
                             "(default 0: every pixel weighs the same)")
    parser.add_argument("--sigma-shift", type=float, default=3.0,
                        help="shift of the training noise levels towards noise, as the sampler's schedule "
                             "(default 3, the tiny model's sampling shift; 1: plain logit-normal)")
    parser.add_argument("--autoencoder-steps", type=int, default=800)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help='"cuda" to train on a GPU (default cpu)')


def run(args: argparse.Namespace) -> int:
    from hsa_core.models.tiny.model import WEIGHTS_DIR
    from hsa_video.tiny.report import write_training_report

    args.out = args.out or WEIGHTS_DIR
    from hsa_video.tiny.train import TrainSettings, train

    info = train(
        TrainSettings(
            out=args.out,
            minutes=args.minutes,
            max_steps=args.max_steps,
            resume=args.resume,
            batch=args.batch,
            lr=args.lr,
            total_steps=args.total_steps,
            object_loss_weight=args.object_loss_weight,
            sigma_shift=args.sigma_shift,
            autoencoder_steps=args.autoencoder_steps,
            threads=args.threads,
            seed=args.seed,
            device=args.device,
        )
    )
    write_training_report(args.out)
    print(f"trained to step {info['steps']} ({info['clips_seen']} clips, {info['seconds'] / 60:.1f} min); "
          f"weights in {args.out}")
    return 0
