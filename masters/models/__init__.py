"""Tiny, randomly initialised VLMs built offline from real transformers config classes."""

from masters.models.tiny import SIZES, TINY_FAMILIES, TINY_MODEL_TYPES, build_tiny_model, build_tokenizer

__all__ = ["SIZES", "TINY_FAMILIES", "TINY_MODEL_TYPES", "build_tiny_model", "build_tokenizer"]
