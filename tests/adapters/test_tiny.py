"""The tiny model factory: deterministic, sized, sharing one tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from masters.models import SIZES, TINY_FAMILIES, TINY_MODEL_TYPES, build_tiny_model


def test_same_seed_same_weights_other_seed_other_weights():
    a, _ = build_tiny_model("llava", "tiny", seed=3)
    b, _ = build_tiny_model("llava", "tiny", seed=3)
    c, _ = build_tiny_model("llava", "tiny", seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_overrides_change_the_size():
    model, _ = build_tiny_model("qwen2_vl", "tiny", hidden=32, layers=1)
    assert model.config.text_config.hidden_size == 32 and model.config.text_config.num_hidden_layers == 1


def test_saved_directory_has_everything_to_reload(tiny_dirs):
    path = tiny_dirs("internvl")
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "masters_tiny.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    assert json.loads((path / "config.json").read_text())["model_type"] == "internvl"


def test_tokenizer_is_shared_across_families_and_sizes(tiny_dirs):
    from transformers import PreTrainedTokenizerFast

    vocabs = [PreTrainedTokenizerFast.from_pretrained(str(tiny_dirs(f))).get_vocab() for f in ("llava", "gemma3")]
    vocabs.append(PreTrainedTokenizerFast.from_pretrained(str(tiny_dirs("llava", "small"))).get_vocab())
    assert vocabs[0] == vocabs[1] == vocabs[2]
    assert {"red", "circle", "B", "<|im_end|>", "<image>"} <= set(vocabs[0])


def test_every_family_has_a_model_type_and_sizes_are_ordered():
    assert set(TINY_FAMILIES) == set(TINY_MODEL_TYPES)
    assert SIZES["small"].hidden > SIZES["tiny"].hidden


def test_unknown_family_is_rejected():
    with pytest.raises(ValueError, match="known"):
        build_tiny_model("nope")
