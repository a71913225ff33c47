"""Randomly initialised VLMs of every supported family, built from real config classes, offline.

``build_tiny_model("qwen2_vl", "tiny", out_dir)`` writes a checkpoint directory (config, safetensors
weights, tokenizer, processor) that loads exactly like a real one through its adapter. Teacher and
student of different sizes share one tokenizer: pass the same ``tokenizer_dir`` (or build both from
the default, which is trained deterministically on the shapes task's words).

The shapes are what make these models fast on CPU: 32 px images cut into 8 px patches (16 patches,
4 to 16 image tokens), hidden size 64, two layers.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from masters.models.tokenizer import train_word_tokenizer

IMAGE_SIZE = 32
PATCH = 8


@dataclass(frozen=True)
class Dims:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vision_hidden: int
    vision_layers: int
    pad_vocab_to: int  # families pad the embedding differently; sizes differ too, on purpose
    # The families' default initializer_range (0.02) is tuned for hidden sizes in the thousands: at
    # hidden 64 the image features reach the language model so faint that a tiny model fits the
    # answer prior and never learns to look (measured: chance accuracy on one-shape colour
    # questions after 800 steps at 0.02; near-zero loss after 250 steps at 0.1).
    init_std: float = 0.1


SIZES: dict[str, Dims] = {
    "tiny": Dims(hidden=64, layers=2, heads=4, intermediate=128, vision_hidden=32, vision_layers=2, pad_vocab_to=8),
    "small": Dims(hidden=128, layers=3, heads=4, intermediate=256, vision_hidden=64, vision_layers=2, pad_vocab_to=64),
}

def _template(user: str, image: str, end: str, assistant: str, bos: str = "") -> str:
    """A Jinja chat template: ``bos user [image...] text end assistant``, answers ended by ``end``."""
    return (
        bos
        + "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}" + user
        + "{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'image' -%}" + image + "{%- else -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}" + end + "{%- else -%}" + assistant
        + "{%- for part in message['content'] -%}{{ part['text'] }}{%- endfor -%}" + end
        + "{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}" + assistant + "{%- endif -%}"
    )


_QWEN = _template("<|im_start|>user\n", "<|vision_start|><|image_pad|><|vision_end|>", "<|im_end|>\n", "<|im_start|>assistant\n")

# family -> (chat template, EOS token, named special tokens the processor reads off the tokenizer)
_FAMILY_TEXT: dict[str, tuple[str, str, dict[str, str]]] = {
    "llava": (_template("USER: ", "<image>\n", " ", "ASSISTANT:", bos="<bos>"), "<eos>", {"image_token": "<image>"}),
    "qwen2_vl": (_QWEN, "<|im_end|>", {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}),
    "internvl": (
        _template("<|im_start|>user\n", "<IMG_CONTEXT>\n", "<|im_end|>\n", "<|im_start|>assistant\n"),
        "<|im_end|>",
        {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
         "video_token": "<video>"},
    ),
    "idefics3": (
        _template("<|im_start|>User:", "<image>", "<end_of_utterance>\n", "Assistant:"),
        "<end_of_utterance>",
        {"image_token": "<image>"},
    ),
    "gemma3": (
        _template("<start_of_turn>user\n", "<start_of_image>", "<end_of_turn>\n", "<start_of_turn>model\n", bos="<bos>"),
        "<end_of_turn>",
        {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"},
    ),
}
_TEXT_OF = {"llava": "llava", "llava_qwen2": "llava", "qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_vl",
            "qwen3_vl": "qwen2_vl", "internvl": "internvl", "idefics3": "idefics3", "smolvlm": "idefics3",
            "gemma3": "gemma3"}
TINY_FAMILIES: tuple[str, ...] = tuple(_TEXT_OF)
# family -> model_type of the checkpoint it builds (torch-free: the conformance kit matches these
# against each adapter's claimed model types).
TINY_MODEL_TYPES: dict[str, str] = {"llava": "llava", "llava_qwen2": "llava", "qwen2_vl": "qwen2_vl",
                                    "qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl", "internvl": "internvl",
                                    "idefics3": "idefics3", "smolvlm": "smolvlm", "gemma3": "gemma3"}


def build_tokenizer(out_dir: str | Path | None = None, *, words: list[str] | None = None):
    """The shared word-level tokenizer (deterministic: same words, same ids, every time).

    ``words`` (default: the shapes task's vocabulary, so the demo's tokenizer never changes) gives
    another task its own vocabulary, e.g. ``masters.tasks.shapes_reason.shapes_reason_vocabulary()``.
    """
    if words is None:
        from masters.tasks.shapes import shapes_vocabulary

        words = shapes_vocabulary()
    tok = train_word_tokenizer([" ".join(words)])
    if out_dir is not None:
        _save_files_into(Path(out_dir), lambda tmp: tok.save_pretrained(str(tmp)), last=("tokenizer.json",))
    return tok


def _save_files_into(out: Path, write: Any, last: tuple[str, ...] = ()) -> None:
    """Decision 18 for a directory that may hold other files: ``write`` fills a temporary directory of
    masters' own name beside ``out``, then each file is renamed into ``out`` (the ``last`` names after
    the others, so they are there only when everything is). A kill leaves whole files only."""
    from masters.files import temp_sibling

    out.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out)
    tmp.mkdir()
    try:
        write(tmp)
        for path in sorted(tmp.iterdir(), key=lambda p: (p.name in last, last.index(p.name) if p.name in last else 0)):
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def family_tokenizer(family: str, base):
    """A copy of ``base`` with this family's chat template, EOS and named special tokens."""
    from transformers import PreTrainedTokenizerFast

    template, eos, named = _FAMILY_TEXT[_TEXT_OF[family]]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer,
        pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token=eos,
        padding_side="left", extra_special_tokens=named,
    )
    tok.chat_template = template
    return tok


def _text_kwargs(dims: Dims, vocab: int, tok) -> dict[str, Any]:
    return dict(
        vocab_size=vocab, hidden_size=dims.hidden, intermediate_size=dims.intermediate,
        num_hidden_layers=dims.layers, num_attention_heads=dims.heads, num_key_value_heads=dims.heads // 2,
        max_position_embeddings=512, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def _mrope(dims: Dims, **extra: Any) -> dict[str, Any]:
    half = dims.hidden // dims.heads // 2  # mrope_section (t, h, w) must sum to head_dim / 2
    hw = half * 3 // 8
    return {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [half - 2 * hw, hw, hw], **extra}


def _vision_dims(dims: Dims) -> dict[str, Any]:
    return dict(hidden_size=dims.vision_hidden, intermediate_size=2 * dims.vision_hidden,
                num_hidden_layers=dims.vision_layers, num_attention_heads=2)


def _config_and_processor(family: str, dims: Dims, vocab: int, tok):
    """The family's config and processor for the tiny shapes."""
    import transformers as tf

    from masters.adapters import processors as P

    ids = tok.convert_tokens_to_ids
    text = _text_kwargs(dims, vocab, tok)
    vis = _vision_dims(dims)
    if family in ("llava", "llava_qwen2"):
        text_cfg = tf.LlamaConfig(**text) if family == "llava" else tf.Qwen2Config(**text)
        cfg = tf.LlavaConfig(
            vision_config=tf.CLIPVisionConfig(**vis, image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=dims.hidden),
            text_config=text_cfg, image_token_index=ids("<image>"), image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
            vision_feature_layer=-1, vision_feature_select_strategy="default",
        )
        image_proc = tf.CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                              crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
        proc = tf.LlavaProcessor(image_proc, tok, patch_size=PATCH, vision_feature_select_strategy="default",
                                 num_additional_image_tokens=1, chat_template=tok.chat_template)
        return cfg, proc
    if family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        image_proc = tf.Qwen2VLImageProcessorPil(
            patch_size=PATCH, merge_size=2, temporal_patch_size=2,
            size={"shortest_edge": IMAGE_SIZE * IMAGE_SIZE, "longest_edge": 4 * IMAGE_SIZE * IMAGE_SIZE},
        )
        mm_ids = dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                      vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
        vision = dict(depth=dims.vision_layers, num_heads=2, patch_size=PATCH, spatial_merge_size=2,
                      temporal_patch_size=2)
        if family == "qwen2_vl":
            cfg = tf.Qwen2VLConfig(
                text_config=tf.Qwen2VLTextConfig(**text, rope_parameters=_mrope(dims)),
                vision_config=tf.Qwen2VLVisionConfig(**vision, embed_dim=dims.vision_hidden, hidden_size=dims.hidden),
                **mm_ids,
            )
            proc_cls = P.Qwen2VLImageProcessor
        elif family == "qwen2_5_vl":
            cfg = tf.Qwen2_5_VLConfig(
                text_config=tf.Qwen2_5_VLTextConfig(**text, rope_parameters=_mrope(dims)),
                vision_config=tf.Qwen2_5_VLVisionConfig(
                    **vision, hidden_size=dims.vision_hidden, intermediate_size=2 * dims.vision_hidden,
                    out_hidden_size=dims.hidden, window_size=2 * PATCH * 2, fullatt_block_indexes=[dims.vision_layers - 1],
                ),
                **mm_ids,
            )
            proc_cls = P.Qwen2_5_VLImageProcessor
        else:
            cfg = tf.Qwen3VLConfig(
                text_config=tf.Qwen3VLTextConfig(**text, head_dim=dims.hidden // dims.heads,
                                                 rope_parameters=_mrope(dims, mrope_interleaved=True)),
                vision_config=tf.Qwen3VLVisionConfig(
                    **vision, hidden_size=dims.vision_hidden, intermediate_size=2 * dims.vision_hidden,
                    out_hidden_size=dims.hidden, num_position_embeddings=(IMAGE_SIZE // PATCH) ** 2,
                    deepstack_visual_indexes=[0],
                ),
                **mm_ids,
            )
            proc_cls = P.Qwen3VLImageProcessor
        return cfg, proc_cls(image_proc, tok, chat_template=tok.chat_template)
    if family == "internvl":
        cfg = tf.InternVLConfig(
            vision_config=tf.InternVLVisionConfig(**vis, image_size=[IMAGE_SIZE, IMAGE_SIZE], patch_size=[PATCH, PATCH]),
            text_config=tf.Qwen2Config(**text), image_token_id=ids("<IMG_CONTEXT>"),
            image_seq_length=(IMAGE_SIZE // PATCH) ** 2 // 4, downsample_ratio=0.5,
        )
        image_proc = tf.GotOcr2ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, crop_to_patches=False)
        proc = P.InternVLImageProcessor(image_proc, tok, image_seq_length=cfg.image_seq_length,
                                        chat_template=tok.chat_template)
        return cfg, proc
    if family in ("idefics3", "smolvlm"):
        cfg_cls, vcfg_cls = (
            (tf.Idefics3Config, tf.Idefics3VisionConfig) if family == "idefics3" else (tf.SmolVLMConfig, tf.SmolVLMVisionConfig)
        )
        cfg = cfg_cls(
            vision_config=vcfg_cls(**vis, image_size=IMAGE_SIZE, patch_size=PATCH),
            text_config=tf.LlamaConfig(**text), image_token_id=ids("<image>"), scale_factor=2,
        )
        ip_cls = tf.Idefics3ImageProcessorPil if family == "idefics3" else tf.SmolVLMImageProcessorPil
        image_proc = ip_cls(do_image_splitting=False, size={"longest_edge": IMAGE_SIZE},
                            max_image_size={"longest_edge": IMAGE_SIZE})
        seq = (IMAGE_SIZE // PATCH) ** 2 // 4
        if family == "idefics3":
            proc = tf.Idefics3Processor(image_proc, tok, image_seq_len=seq, chat_template=tok.chat_template)
        else:
            proc = P.SmolVLMImageProcessor(image_proc, tok, image_seq_len=seq, chat_template=tok.chat_template)
        return cfg, proc
    if family == "gemma3":
        head_dim = dims.hidden // dims.heads
        cfg = tf.Gemma3Config(
            vision_config=tf.SiglipVisionConfig(**vis, image_size=IMAGE_SIZE, patch_size=PATCH),
            text_config=tf.Gemma3TextConfig(**text, head_dim=head_dim, query_pre_attn_scalar=head_dim, sliding_window=64),
            mm_tokens_per_image=4, boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
            image_token_index=ids("<image_soft_token>"),
        )
        image_proc = tf.Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
        proc = tf.Gemma3Processor(image_proc, tok, image_seq_length=4, chat_template=tok.chat_template)
        return cfg, proc
    raise ValueError(f"no tiny recipe for family {family!r}; known: {', '.join(TINY_FAMILIES)}")


def _set_init_std(cfg, std: float) -> None:
    cfg.initializer_range = std
    for sub in ("text_config", "vision_config"):
        if getattr(cfg, sub, None) is not None:
            getattr(cfg, sub).initializer_range = std


def build_tiny_model(
    family: str,
    size: str | Dims = "tiny",
    out_dir: str | Path | None = None,
    *,
    tokenizer_dir: str | Path | None = None,
    seed: int = 0,
    **overrides: int,
):
    """Build (and, with ``out_dir``, save) a randomly initialised model of ``family``.

    ``size`` is a name in :data:`SIZES` or a :class:`Dims`; ``overrides`` replace single fields of it
    (``hidden=96, layers=3``). Returns ``(model, processor)``. The same family, size and seed give
    bit-identical weights.
    """
    import torch
    import transformers as tf

    if family not in TINY_FAMILIES:
        raise ValueError(f"no tiny recipe for family {family!r}; known: {', '.join(TINY_FAMILIES)}")
    dims = SIZES[size] if isinstance(size, str) else size
    dims = replace(dims, **overrides) if overrides else dims
    base = tf.PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir)) if tokenizer_dir else build_tokenizer()
    tok = family_tokenizer(family, base)
    vocab = -(-len(tok) // dims.pad_vocab_to) * dims.pad_vocab_to
    cfg, proc = _config_and_processor(family, dims, vocab, tok)
    _set_init_std(cfg, dims.init_std)
    torch.manual_seed(seed)
    random.seed(seed)
    model = tf.AutoModelForImageTextToText.from_config(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    if out_dir is not None:
        def write(tmp: Path) -> None:
            model.save_pretrained(str(tmp))
            proc.save_pretrained(str(tmp))
            (tmp / "masters_tiny.json").write_text(json.dumps({"family": family, "size": dims.__dict__, "seed": seed}))

        _save_files_into(Path(out_dir), write, last=("config.json", "masters_tiny.json"))
    return model, proc
