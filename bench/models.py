"""Models built from configs with random weights, for tests and benchmarks (nothing is downloaded).

* :func:`tiny_depth_model` / :func:`save_tiny_depth_model`: a Depth Anything with a
  2-layer, 32-wide DINOv2 backbone (runs in milliseconds on a CPU).
* :func:`tiny_vace_pipeline` / :func:`save_tiny_vace_pipeline`: a Wan VACE pipeline at
  the sizes diffusers' own tests use (VAE base_dim 3, transformer 2 heads x 12 dims,
  3 layers), with a 1-layer UMT5 text encoder and a word-level tokenizer built in memory.
* :func:`full_size_vace_pipeline`: Wan 2.1 VACE 1.3B or 14B at their published sizes
  with random weights, for timing on a GPU (speed does not depend on weight values).

Saved models are ordinary ``save_pretrained`` folders, loaded back through the same
code a user's real weights go through.
"""

from __future__ import annotations

from pathlib import Path

TINY_WORDS = (
    "a an the of in at on with and stone castle courtyard dusk meadow forest museum harbour "
    "locomotive building sky tree trees road street water snow desert city beach night day"
).split()


def tiny_depth_model(kind: str = "metric", max_depth: int = 20, seed: int = 0):
    """``(model, processor)``: a random-weight Depth Anything, ``kind`` ``metric`` or ``relative``."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(seed)
    backbone = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=56, patch_size=14, out_features=["stage1", "stage2"], reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[16, 32], fusion_hidden_size=16,
        head_hidden_size=16, reassemble_factors=[1, 0.5], depth_estimation_type=kind, max_depth=max_depth,
    )
    model = DepthAnythingForDepthEstimation(config).eval()
    processor = DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14, do_pad=False)
    return model, processor


def save_tiny_depth_model(folder: str | Path, kind: str = "metric", **options) -> Path:
    """Write :func:`tiny_depth_model` as a transformers folder; returns it."""
    model, processor = tiny_depth_model(kind, **options)
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_tokenizer():
    """A word-level tokenizer over :data:`TINY_WORDS` (unknown words map to ``<unk>``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in TINY_WORDS:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_vace_pipeline(seed: int = 0):
    """A random-weight ``WanVACEPipeline`` small enough for CPU tests (9 frames at 32x32 in ~0.3 s)."""
    import torch
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanVACEPipeline, WanVACETransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=4, relative_attention_num_buckets=8)
    ).eval()
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=96,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    return WanVACEPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler)


def save_tiny_vace_pipeline(folder: str | Path, seed: int = 0) -> Path:
    """Write :func:`tiny_vace_pipeline` as a diffusers folder; returns it."""
    folder = Path(folder)
    tiny_vace_pipeline(seed).save_pretrained(folder)
    return folder


WAN_VACE_SIZES = {
    # Wan 2.1 VACE transformer sizes (width = heads x 128): 1.3B and 14B.
    "1.3B": {"num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30, "vace_layers": list(range(0, 30, 2))},
    "14B": {"num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40, "vace_layers": list(range(0, 40, 5))},
}
WAN_TEXT_DIM = 4096
"""umT5-XXL's width: the text embeddings a full-size transformer takes."""


def full_size_vace_pipeline(size: str, dtype=None, device: str = "cuda"):
    """A random-weight Wan 2.1 VACE ``size`` (``1.3B`` or ``14B``) pipeline without a text
    encoder (pass ``prompt_embeds`` of width :data:`WAN_TEXT_DIM`), for timing."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel

    dtype = dtype or torch.bfloat16
    sizes = WAN_VACE_SIZES[size]
    with torch.device(device):
        transformer = WanVACETransformer3DModel(
            patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=WAN_TEXT_DIM,
            freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
            vace_in_channels=96, **sizes,
        ).to(dtype)
        vae = AutoencoderKLWan().to(torch.float32)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    return WanVACEPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler)
