"""Tiny, randomly initialised LLaVA-NeXT checkpoints, built offline from transformers config classes.

``build_tiny_llava_next(out_dir)`` writes a checkpoint directory (config, safetensors weights,
tokenizer, processor) that loads exactly like a real one. The vision tower sees 32 px tiles in 8 px
patches; ``image_grid_pinpoints`` of 32-64 px give 2 to 4 tiles (plus the base tile) per image, so
images of 32-64 px get different image-token counts. Teacher and student built with the same
tokenizer (the masters shapes-task tokenizer, the default) share a vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TILE = 32  # the vision tower's image size: one anyres tile
PATCH = 8
PINPOINTS: tuple[tuple[int, int], ...] = ((32, 64), (64, 32), (64, 64))  # (height, width)
# name -> text hidden size, text layers, vision hidden size, vision layers
SIZES: dict[str, tuple[int, int, int, int]] = {"tiny": (64, 2, 32, 2), "micro": (32, 1, 32, 1)}

CHAT_TEMPLATE = (  # LLaVA-NeXT (Vicuna) style: "<bos>USER: <image>\nquestion ASSISTANT: answer<eos>"
    "<bos>{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}USER: "
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<image>\n{%- else -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%} {% else -%}ASSISTANT:"
    "{%- for part in message['content'] -%}{{ part['text'] }}{%- endfor -%}<eos>"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}ASSISTANT:{%- endif -%}"
)


def tiny_tokenizer(tokenizer_dir: str | Path | None = None):
    """The shared word-level tokenizer with LLaVA-NeXT's chat template, EOS and image token."""
    from transformers import PreTrainedTokenizerFast

    from masters.api import build_tokenizer

    base = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir)) if tokenizer_dir else build_tokenizer()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
        eos_token="<eos>", padding_side="left", extra_special_tokens={"image_token": "<image>"},
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_llava_next(out_dir: str | Path | None = None, *, size: str = "tiny", seed: int = 0,
                          tokenizer_dir: str | Path | None = None, init_std: float = 0.1):
    """Build (and, with ``out_dir``, save) a tiny LLaVA-NeXT; returns ``(model, processor)``.

    The same size and seed give bit-identical weights. ``init_std`` is larger than the families'
    0.02 default, which is tuned for hidden sizes in the thousands (at hidden 64 the image features
    would reach the language model too faintly for a tiny model to learn to look).
    """
    import torch
    import transformers as tf

    hidden, layers, v_hidden, v_layers = SIZES[size]
    tok = tiny_tokenizer(tokenizer_dir)
    text = tf.LlamaConfig(
        vocab_size=-(-len(tok) // 8) * 8, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    vision = tf.CLIPVisionConfig(hidden_size=v_hidden, intermediate_size=2 * v_hidden, num_hidden_layers=v_layers,
                                 num_attention_heads=2, image_size=TILE, patch_size=PATCH, projection_dim=hidden)
    pinpoints = [list(p) for p in PINPOINTS]
    cfg = tf.LlavaNextConfig(
        vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints, vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    for sub in (cfg, cfg.text_config, cfg.vision_config):
        sub.initializer_range = init_std
    image_processor = tf.LlavaNextImageProcessorPil(
        size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}, image_grid_pinpoints=pinpoints,
    )
    processor = tf.LlavaNextProcessor(image_processor, tok, patch_size=PATCH, vision_feature_select_strategy="default",
                                      num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)
    torch.manual_seed(seed)
    model = tf.LlavaNextForConditionalGeneration(cfg).eval()
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, key, getattr(tok, key))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out))
        processor.save_pretrained(str(out))
        meta: dict[str, Any] = {"family": "llava_next", "size": size, "seed": seed}
        (out / "masters_tiny.json").write_text(json.dumps(meta) + "\n")
    return model, processor
