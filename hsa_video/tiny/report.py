"""The tiny model's loss curve (PNG) and model card, written next to its weights."""

from __future__ import annotations

import json
from pathlib import Path

# the floor for a useful ruler: checker accuracy at 40 full steps
ACCEPTANCE = {"color": 0.9, "background": 0.9, "background_kind": 0.8, "direction": 0.6}


def write_training_report(weights: Path, evaluation: dict | None = None) -> None:
    weights = Path(weights)
    records = [json.loads(line) for line in (weights / "train_log.jsonl").read_text().splitlines() if line]
    transformer = [r for r in records if r.get("stage") == "transformer"]
    autoencoder = [r for r in records if r.get("stage") == "autoencoder"]
    resumed_at = [r["step"] for r in records if r.get("event") == "resume" and "step" in r]
    if transformer:
        _plot_loss(transformer, resumed_at, weights / "loss.png")
    meta = json.loads((weights / "tiny_config.json").read_text())
    if evaluation is None and (weights / "evaluation.json").exists():
        evaluation = json.loads((weights / "evaluation.json").read_text())
    if evaluation is not None:
        summary = {k: evaluation[k] for k in ("t2v", "i2v", "step_sensitivity_psnr_db", "checker_on_ground_truth")}
        (weights / "evaluation.json").write_text(json.dumps(summary, indent=2) + "\n")
    (weights / "MODEL_CARD.md").write_text(_model_card(meta, transformer, autoencoder, evaluation))


def _plot_loss(records: list[dict], resumed_at: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, axis = plt.subplots(figsize=(6, 3.2))
    axis.plot(steps, [r["loss"] for r in records], alpha=0.3, label="loss (every 25 steps)")
    axis.plot(steps, [r["loss_smoothed"] for r in records], label="EMA-smoothed")
    for index, step in enumerate(resumed_at):
        # a resume may change the schedule or the loss itself (weights, noise levels): levels on either
        # side of the line need not compare
        axis.axvline(step, color="grey", linestyle=":", linewidth=1, label="resumed" if index == 0 else None)
    axis.set_xlabel("transformer step")
    axis.set_ylabel("flow-matching loss")
    axis.set_yscale("log")
    axis.legend()
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _model_card(meta: dict, transformer: list[dict], autoencoder: list[dict], evaluation: dict | None) -> str:
    model, training = meta["model"], meta.get("training", {})
    width = model["heads"] * model["head_dim"]
    speed = [r["clips_per_second"] for r in transformer[-20:] if "clips_per_second" in r]
    lines = [
        "# Model card: hsa-video built-in tiny model",
        "",
        "A text/image-to-video model for a synthetic domain of moving shapes, trained from scratch on CPU.",
        "It is the server's default model, the test fixture and the ruler for quality claims; it is not a",
        "general video model.",
        "",
        "## Data",
        "Procedural clips from `hsa_video/tiny/domain.py`: 16 frames of 32×32 RGB; background solid,",
        "gradient, stripes or checker in one of 8 colours; one or two objects (circle, square, triangle) in",
        "another colour, moving left/right/up/down at 1–2 px/frame (bouncing) or staying still. Unlimited,",
        "seeded; held-out combinations never seen in training: green triangle, yellow circle, purple",
        "square objects; red checker and cyan stripes backgrounds.",
        "",
        "## Architecture",
        f"- Autoencoder: per-frame conv, 32×32×3 ↔ {model['latent_size']}×{model['latent_size']}×"
        f"{model['latent_channels']}, latents normalised per channel.",
        f"- Text encoder: {len(model['vocabulary'])}-token vocabulary (3 special), {model['text_dim']}-d embeddings, "
        f"{model['text_layers']} transformer layers; unknown words → <unk>.",
        f"- Denoiser: diffusers `WanTransformer3DModel`, {model['layers']} layers, width {width} "
        f"({model['heads']} heads × {model['head_dim']}), patch 1×{model['patch']}×{model['patch']} → "
        f"{model['frames'] * (model['latent_size'] // model['patch']) ** 2} tokens.",
        f"- Sampling defaults: {model['steps']} steps, shift {model['shift']}, guidance {model['guidance_scale']}.",
        "",
        "## Training",
        f"- Transformer steps: {training.get('steps')} × batch {training.get('batch')} = "
        f"{training.get('clips_seen')} clips; wall time {training.get('seconds', 0) / 60:.1f} min on the"
        " development CPU (2 cores)" + (f", ~{sum(speed) / len(speed):.1f} clips/s" if speed else "") + ".",
        f"- Autoencoder: {len(autoencoder) and autoencoder[-1]['step'] + 1} steps, final MSE "
        f"{autoencoder[-1]['loss']:.5f}." if autoencoder else "- Autoencoder: trained in an earlier run.",
        f"- AdamW lr {training.get('lr')}, cosine over {training.get('total_steps')} steps, EMA "
        f"{training.get('ema_decay')}; rectified flow, logit-normal σ shifted by "
        f"{training.get('sigma_shift', 1.0):g}, object pixels weighted {1 + training.get('object_loss_weight', 0.0):g}×,"
        " 10% caption dropout, 50% of clips with frame 0 clean (I2V). The weights and the shift are the last"
        " run's; earlier runs of the history in docs/tiny_model.md used other settings.",
        "- Reproduce: `hsa-video train-tiny --minutes M`; continue: `hsa-video train-tiny --resume --minutes M`.",
        "",
        "![loss](loss.png)",
        "",
    ]
    if evaluation is not None:
        lines += ["## Metrics (checker accuracy, 40 full steps)", ""]
        for mode in ("t2v", "i2v"):
            acc = evaluation[mode]["accuracy"]
            lines.append(f"- {mode.upper()} (n={evaluation[mode]['n']}): " + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))
        sensitivity = evaluation["step_sensitivity_psnr_db"]
        lines.append(f"- Step sensitivity: PSNR vs 40 steps: 10 steps {sensitivity['10_vs_40']} dB, "
                     f"20 steps {sensitivity['20_vs_40']} dB")
        lines.append("- Full report: docs/benchmarks/tiny_model.md")
        short = [f"{mode.upper()} {name} {evaluation[mode]['accuracy'][name]:.2f} < {target}"
                 for mode in ("t2v", "i2v") for name, target in ACCEPTANCE.items()
                 if evaluation[mode]["accuracy"][name] < target]
        lines += ["", "## Limitations", ""]
        if short:
            lines.append("Below the project's acceptance targets (train longer: `hsa-video train-tiny --resume`): "
                         + "; ".join(short) + ".")
        else:
            lines.append("Meets the project's acceptance targets for colour, background and direction.")
    return "\n".join(lines) + "\n"
