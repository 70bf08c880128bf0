"""Tiny random-init diffusers Wan pipelines of every registered family, built from configs (no downloads).

Shapes: 9 frames of 64×64 pixels → latents (1, 16, 3, 8, 8) → 48 tokens with 1×2×2 patches. The text
is 512 tokens long because diffusers' Wan 2.1 I2V attention processor splits [image ‖ text] at 512.
"""

import torch

HEIGHT = WIDTH = 64
NUM_FRAMES = 9
TEXT_TOKENS, TEXT_DIM = 512, 32
IMAGE_DIM = 16  # hidden size of the tiny CLIP vision encoder
WORDS = ["a", "cat", "dog", "runs", "on", "the", "beach", "red", "car"]

TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=16,
    out_channels=16,
    text_dim=TEXT_DIM,
    freq_dim=32,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
)
# Wan 2.1 / 2.2 A14B I2V: 16 latent + 4 mask + 16 image-latent channels in, 16 out. Wan 2.1 I2V also
# projects CLIP image tokens (image_dim) to the model width (added_kv_proj_dim = 2 heads × 12).
I2V_CHANNELS = dict(in_channels=36, out_channels=16)

# name → (pipeline class, transformer overrides, experts, expand_timesteps)
FAMILIES = {
    "wan2.1-t2v-1.3b": ("WanPipeline", {}, 1, False),
    "wan2.1-i2v-14b-480p": ("WanImageToVideoPipeline",
                            {**I2V_CHANNELS, "image_dim": IMAGE_DIM, "added_kv_proj_dim": 24}, 1, False),
    "wan2.2-ti2v-5b": ("WanPipeline", {}, 1, True),
    "wan2.2-t2v-a14b": ("WanPipeline", {}, 2, False),
    "wan2.2-i2v-a14b": ("WanImageToVideoPipeline", I2V_CHANNELS, 2, False),
}
BOUNDARY_RATIO = 0.75  # splits a 20-step shift-3 schedule into 10 + 10 steps


def tiny_vae():
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()


def tiny_transformer(seed: int, **overrides):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(**{**TRANSFORMER, **overrides}).eval()


def tiny_text_stack():
    """A word-level tokenizer and a 1-layer UMT5 encoder with TEXT_DIM outputs."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    vocab = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1,
                                          num_heads=2, relative_attention_num_buckets=8)).eval()
    return tokenizer, encoder


def tiny_image_stack():
    """A CLIP vision encoder on 32×32 images (16 patches + CLS) and its processor."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=IMAGE_DIM, intermediate_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, image_size=32, patch_size=8)).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return processor, encoder


def build_pipeline(name: str, shift: float = 3.0, with_text_encoder: bool = False):
    """The diffusers pipeline of family ``name`` with FlowMatchEulerDiscreteScheduler(shift)."""
    import diffusers

    pipeline_class, overrides, experts, expand_timesteps = FAMILIES[name]
    components = dict(
        vae=tiny_vae(),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=shift),
        transformer=tiny_transformer(0, **overrides),
        transformer_2=tiny_transformer(1, **overrides) if experts == 2 else None,
        boundary_ratio=BOUNDARY_RATIO if experts == 2 else None,
        expand_timesteps=expand_timesteps,
        tokenizer=None,
        text_encoder=None,
    )
    if with_text_encoder:
        components["tokenizer"], components["text_encoder"] = tiny_text_stack()
    if "image_dim" in overrides:
        components["image_processor"], components["image_encoder"] = tiny_image_stack()
    pipeline = getattr(diffusers, pipeline_class)(**components)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def tiny_image():
    from PIL import Image

    generator = torch.Generator().manual_seed(3)
    pixels = (torch.rand(HEIGHT, WIDTH, 3, generator=generator) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def text_embeddings(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=generator),
            torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=generator))
