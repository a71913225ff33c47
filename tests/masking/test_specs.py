"""Masker specs: strict fields, clear errors, and listing them never imports torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from masters.errors import MastersError, SpecError
from masters.masking.runtime import MaskedTeacher
from masters.config import validate_component


def test_unknown_part_is_a_spec_error_with_its_location():
    with pytest.raises(SpecError) as info:
        validate_component("masker", {"name": "magnitude", "parts": ["audio"]})
    assert info.value.problems[0][0].startswith("magnitude.parts")


def test_unknown_memory_mode_and_field_typos_are_spec_errors():
    with pytest.raises(SpecError, match="memory"):
        validate_component("masker", {"name": "magnitude", "memory": "disk"})
    with pytest.raises(SpecError, match="Did you mean: exclude"):
        validate_component("masker", {"name": "magnitude", "exclud": ["x"]})


@pytest.mark.parametrize("level", ["1", "1.5", "-0.1", "0.00001", "abc"])
def test_levels_outside_zero_one_are_clear_errors(level):
    w = torch.nn.Parameter(torch.randn(8, 8))
    with pytest.raises(MastersError) as info:
        MaskedTeacher({"w": w}, validate_component("masker", "magnitude").build(), [level])
    assert info.value.where == "levels" and info.value.fix


def test_nm_group_size_must_divide_the_input_dimension():
    w = torch.nn.Parameter(torch.randn(8, 6))
    with pytest.raises(MastersError, match="not a multiple of m=4") as info:
        MaskedTeacher({"w": w}, validate_component("masker", {"name": "nm"}).build(), ["0.5"])
    assert info.value.where == "masker.nm.m"


def test_masker_specs_import_without_torch():
    code = ("import sys; from masters.plugins import get_components; "
            "names = get_components().registry('masker').names(); "
            "from masters.config import validate_component; [validate_component('masker', n) for n in names]; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"MASTERS_DISABLE_PLUGIN_AUTOLOAD": "1", "PATH": "/usr/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
