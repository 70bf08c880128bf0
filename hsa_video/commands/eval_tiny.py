"""``hsa-video eval-tiny``: score the tiny model with the checker and write docs/benchmarks/tiny_model.*"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", type=int, default=64, help="prompts, half held out (default 64)")
    parser.add_argument("--sensitivity-prompts", type=int, default=16, help="prompts for the step-sensitivity PSNR")
    parser.add_argument("--weights", type=Path, default=None, help="tiny-model weights directory")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="report directory")
    parser.add_argument("--threads", type=int, default=2)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from hsa_core.models.tiny.model import WEIGHTS_DIR, TinyVideoModel
    from hsa_video.tiny.evaluate import EvalSettings, evaluate, render_markdown, work_units, write_reports, write_strip
    from hsa_video.tiny.report import write_training_report

    torch.set_num_threads(args.threads)
    weights = args.weights or WEIGHTS_DIR
    model = TinyVideoModel.load(weights)
    settings = EvalSettings(prompts=args.prompts, sensitivity_prompts=args.sensitivity_prompts)
    with tqdm(total=work_units(settings), unit="clip", desc="eval-tiny", file=sys.stderr) as bar:
        report, samples = evaluate(model, settings, progress=bar.update)
    json_path, md_path = write_reports(report, args.out)
    strip = write_strip(samples, args.out / "tiny_model_samples.png")
    write_training_report(weights, report)
    print(render_markdown(report))
    print(f"wrote {json_path}, {md_path}, {strip}")
    return 0
