"""Tiny models for masking tests, built once per session from real transformers config classes."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    """A randomly initialised Qwen2-VL saved to a local directory (vision tower, merger, language)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    config = Qwen2VLConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=256, max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=250, video_token_id=251, vision_start_token_id=252, vision_end_token_id=253,
    )
    model = Qwen2VLForConditionalGeneration(config).eval()
    path = tmp_path_factory.mktemp("tiny-qwen2vl")
    model.save_pretrained(path)
    return path
