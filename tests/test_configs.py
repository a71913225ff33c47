"""Every example config in configs/ validates: they are documentation users copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from masters.config import load_run_spec

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_example_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
@pytest.mark.filterwarnings("error::masters.errors.ConfigNote")  # shipped configs use the current form
def test_example_config_validates(path):
    if path.name == "demo.yaml":  # the demo's own spec, not a run config
        from masters.demo.spec import load_demo_spec

        load_demo_spec(path)
        return
    load_run_spec(path)
