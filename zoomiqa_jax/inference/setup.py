"""What a scoring run needs before its first image, from the flags `zoomiqa score`, `compare` and `eval` share.

    setup = load_for_inference(args)          # raises one of SETUP_ERRORS, naming the file or flag
    trajs = run_zoomiqa(setup.model, setup.tokenizer, items, setup.settings, prompts=setup.prompts)

The checkpoint (`checkpoint.loading.load_checkpoint`), its tokenizer, the sampling settings with the
checkpoint's own pixel bounds unless `--min-pixels` / `--max-pixels` are given, and the prompts of the protocol
(`--protocol` for Zoom-IQA prompts; other prompts keep the strict defaults) under `--prompt-file`. The CLIs
catch SETUP_ERRORS, print them and exit 2; nothing here prints.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from zoomiqa_jax.checkpoint.loading import CheckpointError
from zoomiqa_jax.processing.prompts import PromptFileError
from zoomiqa_jax.processing.tokenizer import TokenizerError

# A bad --checkpoint, --tokenizer or --prompt-file (CheckpointError and PromptFileError are ValueErrors; an
# HF config.json fault is a ConfigError), or an unreadable file.
SETUP_ERRORS = (CheckpointError, PromptFileError, TokenizerError, ValueError, OSError)


@dataclasses.dataclass
class InferenceSetup:
    model: Any
    tokenizer: Any
    settings: Any  # inference.rounds.SamplingSettings
    prompts: Any  # processing.prompts.PromptSet


def load_for_inference(args: Any) -> InferenceSetup:
    """The model, tokenizer, sampling settings and prompts named by the shared flags of `args` (an argparse
    namespace of `score.build_parser`: checkpoint, tokenizer, dtype, prompt, protocol, prompt_file,
    max_new_tokens, temperature, top_p, top_k, seed, min_pixels, max_pixels)."""
    import jax.numpy as jnp

    from zoomiqa_jax.checkpoint.loading import load_checkpoint, pixel_limits
    from zoomiqa_jax.inference.protocol import make_protocol
    from zoomiqa_jax.inference.rounds import SamplingSettings
    from zoomiqa_jax.processing.image import MAX_PIXELS, MIN_PIXELS
    from zoomiqa_jax.processing.tokenizer import load_tokenizer

    zoomiqa = getattr(args, "prompt", None) == "zoomiqa"  # other prompts keep the strict defaults
    prompts = make_protocol(args.protocol if zoomiqa else "strict", args.prompt_file).prompts
    model, _, meta = load_checkpoint(args.checkpoint, dtype=getattr(jnp, args.dtype))
    tokenizer = load_tokenizer(args.tokenizer or meta)
    low, high = pixel_limits(Path(args.tokenizer or meta))
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                                top_k=args.top_k, seed=args.seed, min_pixels=args.min_pixels or low or MIN_PIXELS,
                                max_pixels=args.max_pixels or high or MAX_PIXELS)
    return InferenceSetup(model, tokenizer, settings, prompts)
