"""benchmarks/jsd.py runs end to end at a tiny size and writes agreeing results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "jsd.py"


@pytest.mark.slow
def test_jsd_benchmark_smoke(tmp_path):
    out = tmp_path / "jsd"
    cmd = [sys.executable, str(SCRIPT), "--tokens", "40", "--vocab", "3000", "--chunk-size", "16", "--repeats", "1",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    for mode in ("forward", "forward+backward"):
        result = report["results"][mode]
        assert result["agreement"]["agree_1e-5"]
        assert result["naive"]["extra_rss"] >= 0 and result["chunked"]["median_s"] > 0
    assert "forward+backward" in out.with_suffix(".md").read_text()
