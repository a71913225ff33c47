"""A new family needs only the public hooks: model class from config.json, claims by model_types."""

from __future__ import annotations

import json
import warnings
from typing import ClassVar, Literal

import pytest

from masters.adapters.base import HFVLMAdapter
from masters.adapters.resolve import adapter_spec_for
from masters.errors import MastersError
from masters.plugins import PluginWarning, get_components
from masters.registry import Origin
from masters.specs import AdapterSpec


def _implementation(spec_cls):
    import importlib

    module, _, attr = spec_cls.implementation.partition(":")
    return getattr(importlib.import_module(module), attr)


def test_no_family_overrides_a_private_method():
    for entry in get_components().registry("adapter"):
        impl = _implementation(entry.spec_cls)
        for cls in impl.__mro__[: impl.__mro__.index(HFVLMAdapter)]:
            private = [n for n in vars(cls) if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{cls.__name__} overrides {private}: make it a public family hook"


def test_model_class_comes_from_architectures_else_the_auto_class():
    import transformers

    pick = HFVLMAdapter.model_class_for
    assert pick(None, {"architectures": ["LlavaNextForConditionalGeneration"]}) is transformers.LlavaNextForConditionalGeneration
    assert pick(None, {"model_type": "llava"}) is transformers.AutoModelForImageTextToText
    assert pick(None, {"architectures": ["NotAClass"]}) is transformers.AutoModelForImageTextToText


def test_a_checkpoint_of_an_unknown_architecture_is_a_clear_error(tiny_dirs, tmp_path):
    import shutil

    path = tmp_path / "odd"
    shutil.copytree(tiny_dirs("llava"), path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "architectures": ["Mystery"], "model_type": "mystery"}))
    with pytest.raises(MastersError, match="cannot (load|read) the model") as err:
        adapter_spec_for({"path": str(path), "adapter": "llava"}).build(path=path)
    assert "Mystery" in str(err.value) and str(path) in str(err.value)


def _spec(name: str, model_types: tuple[str, ...]):
    cls = type(f"Spec_{name}", (AdapterSpec,), {
        "__annotations__": {"name": Literal[name], "implementation": ClassVar[str], "model_types": ClassVar[tuple]},
        "name": name, "implementation": "masters.adapters.families:LlavaAdapter", "model_types": model_types,
        "__doc__": f"test adapter {name}",
    })
    return cls


def _register(spec_cls, plugin: str = "test_plugin"):
    get_components().registry("adapter").register(spec_cls, Origin(plugin, f"masters-{plugin}", "0.0", "tests"))


def _checkpoint(tmp_path, model_type: str):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return tmp_path


def test_any_registered_specs_model_types_claim_its_checkpoints(fresh_components, tmp_path):
    _register(_spec("novel_vlm", ("novel_vlm", "novel_vlm_v2")))
    assert adapter_spec_for(_checkpoint(tmp_path, "novel_vlm_v2")).name == "novel_vlm"  # no claim hook needed


def test_two_specs_claiming_one_model_type_warn_and_the_first_registered_wins(fresh_components, tmp_path):
    _register(_spec("first_vlm", ("shared_type",)), "one")
    _register(_spec("second_vlm", ("shared_type",)), "two")
    with pytest.warns(PluginWarning, match=r"first_vlm .*second_vlm .*adapter:"):
        assert adapter_spec_for(_checkpoint(tmp_path, "shared_type")).name == "first_vlm"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert adapter_spec_for(_checkpoint(tmp_path, "llava")).name == "llava"  # one claimant: silent
    _register(_spec("llava_again", ("llava",)), "three")
    with pytest.warns(PluginWarning, match=r"llava .*llava_again .*using 'llava'"):
        assert adapter_spec_for(_checkpoint(tmp_path, "llava")).name == "llava"  # a shadowed type is named


def test_unclaimed_model_type_is_never_listed_as_supported(fresh_components, tmp_path):
    _register(_spec("other_vlm", ("other_type",)))
    with pytest.raises(MastersError) as err:
        adapter_spec_for(_checkpoint(tmp_path, "mystery_vlm"))
    text = str(err.value)
    assert "no adapter handles model_type 'mystery_vlm'" in text
    supported = text.split("supported model types:")[1].split(";")[0].split(",")
    supported = [t.strip() for t in supported]
    assert "mystery_vlm" not in supported and {"llava", "smolvlm", "other_type"} <= set(supported)


def test_pad_and_concat_pads_the_tile_dimension_with_zeros():
    import torch

    a, b = torch.ones(1, 3, 2), torch.ones(2, 5, 2) * 2
    out = HFVLMAdapter.pad_and_concat([a, b], dim=1)
    assert out.shape == (3, 5, 2) and out[0, 3:].abs().sum() == 0 and torch.equal(out[0, :3], a[0])
    assert torch.equal(out[1:], b)
    same = HFVLMAdapter.pad_and_concat([a, a])
    assert same.shape == (2, 3, 2)
    masks = HFVLMAdapter.pad_and_concat([torch.ones(1, 1, 2, 2, dtype=torch.bool), torch.ones(1, 2, 2, 2, dtype=torch.bool)])
    assert masks.dtype == torch.bool and masks.shape == (2, 2, 2, 2) and not masks[0, 1].any()
