"""`zoomiqa-convert`: HF safetensors <-> orbax checkpoint conversion (see docs/conversion.md)."""
