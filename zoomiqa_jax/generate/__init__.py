"""Generation: jitted prefill + KV-cache decoding with buckets and shared-prefix group sampling."""

from zoomiqa_jax.generate.engine import Buckets, GenerateOutput, compile_count, generate
from zoomiqa_jax.generate.sampling import choose_tokens, filter_logits, top_k_filter, top_p_filter

__all__ = [
    "Buckets",
    "GenerateOutput",
    "choose_tokens",
    "compile_count",
    "filter_logits",
    "generate",
    "top_k_filter",
    "top_p_filter",
]
