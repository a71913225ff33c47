"""Choosing the adapter from a checkpoint directory; registration; torch-free specs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from masters.adapters.resolve import adapter_spec_for, resolve_adapter
from masters.errors import MastersError
from masters.plugins import get_components

FAMILIES = ["llava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl", "idefics3", "gemma3"]


def test_every_family_is_registered_with_its_model_types():
    registry = get_components().registry("adapter")
    assert set(FAMILIES) <= set(registry.names())
    claimed = {t for e in registry for t in e.spec_cls.model_types}
    assert {"llava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl", "idefics3", "smolvlm", "gemma3"} <= claimed


@pytest.mark.parametrize(("family", "adapter"), [("llava_qwen2", "llava"), ("smolvlm", "idefics3"), ("qwen3_vl", "qwen3_vl")])
def test_claim_hook_picks_the_adapter_from_config_json(tiny_dirs, family, adapter):
    assert adapter_spec_for(tiny_dirs(family)).name == adapter
    assert resolve_adapter({"path": str(tiny_dirs(family))}).spec.name == adapter


def test_explicit_adapter_wins_over_the_claim(tiny_dirs):
    spec = adapter_spec_for({"path": str(tiny_dirs("llava")), "adapter": {"name": "llava", "dtype": "float32"}})
    assert spec.dtype == "float32"
    adapter = resolve_adapter({"path": str(tiny_dirs("llava")), "adapter": "llava"})
    assert adapter.spec.name == "llava"


def test_unknown_model_type_lists_supported_types(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mystery_vlm"}))
    with pytest.raises(MastersError) as err:
        adapter_spec_for(tmp_path)
    text = str(err.value)
    supported = [t.strip() for t in text.split("supported model types:")[1].split(";")[0].split(",")]
    assert "'mystery_vlm'" in text and "mystery_vlm" not in supported
    assert {"qwen2_vl", "smolvlm", "llava"} <= set(supported)


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"architectures": []})])
def test_missing_or_bad_config_is_a_clear_error(tmp_path, content):
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(MastersError, match=str(tmp_path).replace("\\", "\\\\")):
        adapter_spec_for(tmp_path)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(MastersError, match="not found"):
        resolve_adapter(tmp_path / "nope")


def test_listing_adapters_imports_no_torch():
    code = ("import sys; from masters.plugins import get_components; "
            "names = get_components().registry('adapter').names(); "
            "import masters.adapters, masters.data, masters.interfaces; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'; print(names)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "qwen2_vl" in out.stdout
