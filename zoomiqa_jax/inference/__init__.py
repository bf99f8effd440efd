"""Generation: jitted prefill + KV-cache decoding with buckets and shared-prefix group sampling, and the
Zoom-IQA crop-and-zoom / Q-Insight / VisualQuality-R1 inference protocols on top of it."""

from zoomiqa_jax.inference.engine import Buckets, GenerateOutput, compile_count, generate
from zoomiqa_jax.inference.rounds import ImageItem, SamplingSettings
from zoomiqa_jax.inference.sampling import choose_tokens, filter_logits, top_k_filter, top_p_filter
from zoomiqa_jax.inference.single_turn import run_comparisons, run_single_turn
from zoomiqa_jax.inference.trajectory import Round, Trajectory, count_invalid
from zoomiqa_jax.inference.zoom import run_zoomiqa

__all__ = [
    "Buckets",
    "GenerateOutput",
    "ImageItem",
    "Round",
    "SamplingSettings",
    "Trajectory",
    "choose_tokens",
    "compile_count",
    "count_invalid",
    "filter_logits",
    "generate",
    "run_comparisons",
    "run_single_turn",
    "run_zoomiqa",
    "top_k_filter",
    "top_p_filter",
]
