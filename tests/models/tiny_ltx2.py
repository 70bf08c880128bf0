"""A tiny random-init diffusers LTX-2 pipeline built from configs (no downloads).

Sizes follow diffusers' own LTX-2 fast tests: 5 frames of 32×32 pixels → video latents (1, 4, 3, 16, 16)
(the tiny VAE compresses ×2 in space and time) = 768 video tokens of 4 numbers; 5 frames at 24 fps →
5 audio latent frames of 2 channels × 2 mel bins = 5 audio tokens of 4 numbers. The text encoder is a
1-layer Gemma 3 with a word-level tokenizer; its 2 hidden states (embeddings + layer) of 16 channels
feed the connectors. The scheduler shifts like LTX-2's: by the number of video tokens, exponentially,
stretched to a terminal σ.
"""

import torch

HEIGHT = WIDTH = 32
NUM_FRAMES = 5
FRAME_RATE = 24
TEXT_TOKENS, TEXT_DIM, TEXT_LAYERS = 16, 16, 1
WORDS = ["a", "cat", "dog", "runs", "on", "the", "beach", "red", "car", "sings"]


def tiny_transformer(perturbed_attn: bool = False):
    """perturbed_attn: blocks that take spatio-temporal guidance's perturbation (LTX-2.3's configuration; it adds
    no weights, so both variants share theirs)."""
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(0)
    return LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, caption_channels=TEXT_DIM,
        rope_double_precision=False, rope_type="split", perturbed_attn=perturbed_attn,
    ).eval()


def tiny_connectors():
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    torch.manual_seed(0)
    return LTX2TextConnectors(
        caption_channels=TEXT_DIM, text_proj_in_factor=TEXT_LAYERS + 1, video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=4, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=4, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_double_precision=False,
        rope_type="split",
    ).eval()


def tiny_vae():
    from diffusers import AutoencoderKLLTX2Video

    torch.manual_seed(0)
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,),
        layers_per_block=(1,), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False), downsample_type=("spatial",),
        upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False,
    ).eval()
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    return vae


def tiny_audio_stack():
    """The audio VAE (2 latent channels, 8 mel bins) and a vocoder to 16 kHz stereo."""
    from diffusers import AutoencoderKLLTX2Audio
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    torch.manual_seed(0)
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8,
    ).eval()
    torch.manual_seed(0)
    vocoder = LTX2Vocoder(
        in_channels=2 * 8, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2],
        resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]], leaky_relu_negative_slope=0.1,
        output_sampling_rate=16000,
    ).eval()
    return audio_vae, vocoder


def tiny_text_stack():
    """A word-level tokenizer and a 1-layer Gemma 3 (with a tiny SigLIP tower its class requires)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        PreTrainedTokenizerFast,
        SiglipVisionConfig,
    )

    vocab = {token: i for i, token in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                        bos_token="<bos>", unk_token="<unk>", model_max_length=TEXT_TOKENS)
    torch.manual_seed(0)
    config = Gemma3Config(
        text_config=Gemma3TextConfig(vocab_size=len(vocab), hidden_size=TEXT_DIM, intermediate_size=32,
                                     num_hidden_layers=TEXT_LAYERS, num_attention_heads=2, num_key_value_heads=1,
                                     head_dim=8, sliding_window=8),
        vision_config=SiglipVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=16, patch_size=8),
        mm_tokens_per_image=4,
    )
    return tokenizer, Gemma3ForConditionalGeneration(config).eval()


def tiny_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                           base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)


def build_pipeline(image_to_video: bool = False, with_text_encoder: bool = False, perturbed_attn: bool = False):
    """diffusers' LTX2Pipeline (or LTX2ImageToVideoPipeline) over the tiny components."""
    import diffusers

    audio_vae, vocoder = tiny_audio_stack()
    tokenizer, text_encoder = tiny_text_stack() if with_text_encoder else (None, None)
    pipeline_class = diffusers.LTX2ImageToVideoPipeline if image_to_video else diffusers.LTX2Pipeline
    pipeline = pipeline_class(
        scheduler=tiny_scheduler(), vae=tiny_vae(), audio_vae=audio_vae,
        text_encoder=text_encoder, tokenizer=tokenizer, connectors=tiny_connectors(),
        transformer=tiny_transformer(perturbed_attn), vocoder=vocoder,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def tiny_image():
    from PIL import Image

    generator = torch.Generator().manual_seed(3)
    pixels = (torch.rand(HEIGHT, WIDTH, 3, generator=generator) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def text_embeddings(seed: int = 1):
    """Stacked text-encoder hidden states and their masks for a prompt and a negative prompt (left padding)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (1, TEXT_TOKENS, TEXT_DIM * (TEXT_LAYERS + 1))
    prompt, negative = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    prompt_mask = torch.ones(1, TEXT_TOKENS, dtype=torch.long)
    negative_mask = torch.ones(1, TEXT_TOKENS, dtype=torch.long)
    prompt_mask[:, :5] = 0  # left padding, as Gemma's tokenizer pads
    negative_mask[:, :12] = 0
    return prompt, prompt_mask, negative, negative_mask
