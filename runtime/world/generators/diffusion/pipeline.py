"""Loading a Wan VACE pipeline (diffusers) once per process, from local files only.

``load_vace_pipeline(model, ...)`` reads a diffusers-format folder (``model_index.json``,
``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) or a model id
already in the local Hugging Face cache; nothing is downloaded. Every world of the process
shares one :class:`LoadedPipeline`; its lock makes jobs take turns on the GPU (a pipeline call
keeps per-call state on the pipeline object, so two calls must never overlap).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from ..base import GeneratorUnavailable

log = logging.getLogger(__name__)

WAN_DOWNLOAD_HINT = (
    "download Wan VACE in diffusers format, e.g. `huggingface-cli download Wan-AI/Wan2.1-VACE-1.3B-diffusers "
    "--local-dir DIR` (or Wan2.1-VACE-14B-diffusers), and pass --generator-option model=DIR"
)

OFFLOAD_MODES = ("none", "model", "sequential")


@dataclass
class LoadedPipeline:
    """A loaded pipeline, the device it runs on and the lock jobs take turns with."""

    pipe: object
    device: str
    dtype: str
    lock: threading.Lock


_loaded: dict[tuple, LoadedPipeline] = {}
_load_lock = threading.Lock()


def load_vace_pipeline(
    model: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    offload: str = "none",
    lora: str | None = None,
    lora_scale: float = 1.0,
) -> LoadedPipeline:
    """The ``WanVACEPipeline`` in ``model``, loaded once per process for these settings.

    Args:
        model: a diffusers folder, or a model id in the local HF cache.
        device: ``cuda`` when available, else ``cpu``.
        dtype: ``bfloat16`` on CUDA, ``float32`` on the CPU (the VAE always runs in float32).
        offload: ``none``; ``model`` moves each component to the GPU only while it runs
            (``enable_model_cpu_offload``: fits the 14B model in ~40 GB less); ``sequential``
            streams layer by layer (slowest, least memory).
        lora: a LoRA file or folder (e.g. a few-step distillation LoRA), fused at ``lora_scale``.

    Raises :class:`GeneratorUnavailable` (one line naming the option and what to download).
    """
    try:
        import torch
        from diffusers import AutoencoderKLWan, WanVACEPipeline
    except ImportError:
        raise GeneratorUnavailable("the wan-vace generator needs diffusers: pip install 'worldstream[diffusion]'") from None
    if offload not in OFFLOAD_MODES:
        raise GeneratorUnavailable(f"--generator-option offload={offload!r}: use one of {', '.join(OFFLOAD_MODES)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    key = (str(model), device, dtype, offload, lora, float(lora_scale))
    with _load_lock:
        if key in _loaded:
            return _loaded[key]
        torch_dtype = getattr(torch, dtype)
        _quiet_loading()
        try:
            vae = AutoencoderKLWan.from_pretrained(str(model), subfolder="vae", dtype=torch.float32, local_files_only=True)
            pipe = WanVACEPipeline.from_pretrained(str(model), vae=vae, dtype=torch_dtype, local_files_only=True)
        except (OSError, ValueError) as e:
            looks_like_path = os.sep in str(model) or str(model).startswith(".")
            detail = "no such folder" if looks_like_path and not os.path.exists(model) else _first_line(e)
            raise GeneratorUnavailable(f"no Wan VACE model at {model!r} on this machine ({detail}); {WAN_DOWNLOAD_HINT}") from None
        if lora:
            _fuse_lora(pipe, lora, lora_scale)
        if offload == "model" and device.startswith("cuda"):
            pipe.enable_model_cpu_offload()
        elif offload == "sequential" and device.startswith("cuda"):
            pipe.enable_sequential_cpu_offload()
        else:
            pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        loaded = LoadedPipeline(pipe, device, dtype, threading.Lock())
        log.info("Wan VACE model %s loaded on %s (%s, offload %s%s)", model, device, dtype, offload, f", LoRA {lora}" if lora else "")
        _loaded[key] = loaded
        return loaded


def _quiet_loading() -> None:
    """No progress bars from diffusers/transformers while loading: they would fill server logs."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _fuse_lora(pipe, lora: str, scale: float) -> None:
    try:
        pipe.load_lora_weights(str(lora), adapter_name="worldstream", local_files_only=True)
    except ImportError:
        raise GeneratorUnavailable("--generator-option lora=... needs peft: pip install peft") from None
    except (OSError, ValueError) as e:
        raise GeneratorUnavailable(f"--generator-option lora={lora!r}: not a readable LoRA ({_first_line(e)})") from None
    pipe.fuse_lora(lora_scale=scale)
    pipe.unload_lora_weights()  # fused into the weights: the adapter layers are no longer needed


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
