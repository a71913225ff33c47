"""Tiny, randomly initialised Idefics2 checkpoints from transformers config classes (offline)."""

from __future__ import annotations

import json
from pathlib import Path

PATCH = 8
MAX_SIDE = 64
# name -> text hidden, text layers, vision hidden, vision layers, perceiver latents
SIZES = {"tiny": (64, 2, 32, 1, 4), "micro": (32, 1, 32, 1, 4)}

CHAT_TEMPLATE = (  # Idefics2 style: "<bos>User:<image>question<end_of_utterance>\nAssistant: answer<eos>"
    "<bos>{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}User:"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<image>{%- else -%} {{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}<end_of_utterance>\n{% else -%}Assistant:"
    "{%- for part in message['content'] -%} {{ part['text'] }}{%- endfor -%}<eos>"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}Assistant:{%- endif -%}"
)


def tiny_tokenizer():
    """masters' shared word-level tokenizer with Idefics2's chat template and image tokens."""
    from transformers import PreTrainedTokenizerFast

    from masters.api import build_tokenizer

    tok = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer().backend_tokenizer, pad_token="<pad>", unk_token="<unk>",
        bos_token="<bos>", eos_token="<eos>", padding_side="left",
        extra_special_tokens={"image_token": "<image>", "image_boundary_token": "<fake_token_around_image>",
                              "end_of_utterance_token": "<end_of_utterance>"},
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_idefics2(out_dir=None, *, size: str = "tiny", seed: int = 0, init_std: float = 0.1):
    """Build (and, with ``out_dir``, save) a tiny Idefics2; returns ``(model, processor)``."""
    import torch
    import transformers as tf

    hidden, layers, v_hidden, v_layers, latents = SIZES[size]
    tok = tiny_tokenizer()
    text = dict(model_type="mistral", vocab_size=-(-len(tok) // 8) * 8, hidden_size=hidden,
                intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
                num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=512, sliding_window=None,
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vision = dict(hidden_size=v_hidden, intermediate_size=2 * v_hidden, num_hidden_layers=v_layers,
                  num_attention_heads=2, image_size=MAX_SIDE, patch_size=PATCH)
    perceiver = dict(hidden_size=hidden, rms_norm_eps=1e-6, hidden_act="silu", resampler_n_latents=latents, resampler_depth=1, resampler_n_heads=2,
                     resampler_head_dim=8, num_key_value_heads=1)
    cfg = tf.Idefics2Config(vision_config=vision, perceiver_config=perceiver, text_config=text,
                            image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False)
    for sub in (cfg, cfg.text_config, cfg.vision_config, cfg.perceiver_config):
        sub.initializer_range = init_std
    image_processor = tf.Idefics2ImageProcessorPil(
        do_image_splitting=False, size={"shortest_edge": 16, "longest_edge": MAX_SIDE})
    processor = tf.Idefics2Processor(image_processor, tok, image_seq_len=latents, chat_template=CHAT_TEMPLATE)
    torch.manual_seed(seed)
    model = tf.Idefics2ForConditionalGeneration(cfg).eval()
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, key, getattr(tok, key))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out))
        processor.save_pretrained(str(out))
        (out / "masters_tiny.json").write_text(json.dumps({"family": "idefics2", "size": size, "seed": seed}) + "\n")
    return model, processor
