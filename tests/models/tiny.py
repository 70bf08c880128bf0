"""Tiny random-init diffusers Wan pipelines of every registered family, built from configs (no downloads).

Shapes: 9 frames of 64×64 pixels → latents (1, 16, 3, 8, 8) → 48 tokens with 1×2×2 patches through the
Wan 2.1 VAE (8× spatial). Wan 2.2 TI2V has its own 48-channel VAE (2×2 pixel patches, then 8×: 16× spatial),
so the same 64×64 × 9 frames give latents (1, 48, 3, 4, 4) → 12 tokens, 4 per latent frame. The text
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

# Wan 2.2 TI2V 5B: latents of the 48-channel VAE in and out, no condition channels (the image is a clean
# first latent frame under expand_timesteps).
TI2V_CHANNELS = dict(in_channels=48, out_channels=48)

# name → (pipeline class, transformer overrides, experts, expand_timesteps)
FAMILIES = {
    "wan2.1-t2v-1.3b": ("WanPipeline", {}, 1, False),
    "wan2.1-i2v-14b-480p": ("WanImageToVideoPipeline",
                            {**I2V_CHANNELS, "image_dim": IMAGE_DIM, "added_kv_proj_dim": 24}, 1, False),
    # first-last-frame: the Wan 2.1 I2V architecture, the last frame's latents in the condition too
    # (and the CLIP tokens of both frames, told apart by a position embedding over their 2 × 17 tokens)
    "wan2.1-flf2v-14b-720p": ("WanImageToVideoPipeline", {**I2V_CHANNELS, "image_dim": IMAGE_DIM,
                                                          "added_kv_proj_dim": 24, "pos_embed_seq_len": 34}, 1, False),
    "wan2.2-ti2v-5b": ("WanPipeline", TI2V_CHANNELS, 1, True),
    "wan2.2-t2v-a14b": ("WanPipeline", {}, 2, False),
    "wan2.2-i2v-a14b": ("WanImageToVideoPipeline", I2V_CHANNELS, 2, False),
}
BOUNDARY_RATIO = 0.75  # splits a 20-step shift-3 schedule into 10 + 10 steps


# Wan2.2-TI2V-5B-Diffusers' vae/config.json (diffusers' convert_wan_to_diffusers.py, vae22_diffusers_config).
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]
# The Wan 2.2 VAE's structure at a tiny width: RGB pixels patchified 2×2 (12 channels), residual down/up
# blocks, three spatial halvings (16× with the patch) of which the last two also halve time (4×), 48 latent
# channels with the real normalisation. The real one is base_dim 160, decoder_base_dim 256,
# dim_mult [1, 2, 4, 4], num_res_blocks 2; the decoder is wider than the encoder here too. The real config's
# clip_output: false is no AutoencoderKLWan argument in this diffusers (from_pretrained drops it): decode
# always clamps to [-1, 1], which changes nothing after the video postprocessor's own clamp to [0, 1].
WAN22_VAE = dict(
    base_dim=4, decoder_base_dim=8, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
    temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
    scale_factor_spatial=16, scale_factor_temporal=4, latents_mean=WAN22_LATENTS_MEAN,
    latents_std=WAN22_LATENTS_STD,
)


def tiny_vae(wan22: bool = False):
    """The Wan 2.1 VAE (16 channels, 8× spatial), or with ``wan22`` the Wan 2.2 TI2V one (48 channels, 16×)."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    if wan22:
        return AutoencoderKLWan(**WAN22_VAE).eval()
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
        vae=tiny_vae(wan22=expand_timesteps),  # expand_timesteps is TI2V 5B, the one Wan 2.2 VAE user
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
