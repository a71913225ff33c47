"""The per-phase memory log that benchmarks/distributed.py reads (``MASTERS_MEMORY_LOG``), and
accelerate's deepspeed import kept out of runs that do not use it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types

import torch
from launching import needs_deepspeed

from masters.engine.distributed import MEMORY_LOG_ENV, log_memory


class _Rank:
    process_index = 1


def test_the_log_accounts_for_parameters_gradients_and_adam_state(tmp_path, monkeypatch):
    monkeypatch.setenv(MEMORY_LOG_ENV, str(tmp_path / "memory.jsonl"))
    model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 256))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(3, 512)).sum().backward()
    log_memory(_Rank(), "backward", model=model, optimizer=optimizer)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    log_memory(_Rank(), "step", model=model, optimizer=optimizer)
    backward, step = (json.loads(line) for line in (tmp_path / "memory.jsonl").read_text().splitlines())

    params = sum(p.numel() * 4 for p in model.parameters()) / 2**20
    assert backward["rank"] == 1 and backward["phase"] == "backward"
    assert abs(backward["params_mib"] - params) < 0.1 and abs(backward["grads_mib"] - params) < 0.1
    assert backward["optimizer_mib"] == 0.0  # Adam's moments are made at its first step
    assert step["grads_mib"] == 0.0 and abs(step["optimizer_mib"] - 2 * params) < 0.1
    assert step["tensors_mib"] >= step["params_mib"] + step["optimizer_mib"]
    assert 0 < step["anon_mib"] + step["file_mib"] <= step["rss_mib"] + 1
    assert step["peak_mib"] >= step["rss_mib"] - 1


def test_nothing_is_logged_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(MEMORY_LOG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    log_memory(_Rank(), "step")
    assert not list(tmp_path.iterdir())


# A fresh interpreter: the test process itself may have imported deepspeed already.
UNWRAP = """
import sys, torch
from masters.engine.distributed import _launch_settings
_launch_settings()
from accelerate.utils import extract_model_from_parallel
model = torch.nn.Linear(2, 2)
assert extract_model_from_parallel(model) is model
print("deepspeed" in sys.modules)
"""


def test_unwrapping_a_model_does_not_import_deepspeed():
    """accelerate imports deepspeed whenever it is installed to test for a DeepSpeedEngine (about
    120 MiB per rank); with nothing imported there is no such engine to unwrap."""
    out = subprocess.run([sys.executable, "-c", UNWRAP], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


@needs_deepspeed
def test_a_deepspeed_engine_is_still_recognised_once_deepspeed_is_imported(monkeypatch):
    import accelerate.utils.other as other

    from masters.engine.distributed import _import_deepspeed_only_when_used

    _import_deepspeed_only_when_used()
    _import_deepspeed_only_when_used()  # idempotent: one wrapper, not a chain
    check = other.is_deepspeed_available
    assert check.masters
    real = sys.modules.get("deepspeed")
    monkeypatch.delitem(sys.modules, "deepspeed", raising=False)
    spec = importlib.util.find_spec("deepspeed")
    assert check() is False  # installed, not imported
    stand_in = types.ModuleType("deepspeed")
    stand_in.__spec__ = spec
    monkeypatch.setitem(sys.modules, "deepspeed", real or stand_in)
    assert check() is True


LOAD = """
import sys, torch
from masters.engine.checkpoint import load_torch
plain = load_torch(sys.argv[1])
assert torch.equal(plain["x"], torch.arange(3)) and "deepspeed" not in sys.modules
scaler = load_torch(sys.argv[2])  # names DeepSpeed's LossScaler: imported for this file only
print(type(scaler["scaler"]).__name__, "deepspeed" in sys.modules)
"""


@needs_deepspeed
def test_checkpoints_load_without_deepspeed_unless_a_file_names_it(tmp_path):
    torch.save({"x": torch.arange(3)}, tmp_path / "plain.pt")
    made = subprocess.run([sys.executable, "-c", "import sys, torch\n"
                           "from deepspeed.runtime.fp16.loss_scaler import LossScaler\n"
                           "torch.save({'scaler': LossScaler(1.0)}, sys.argv[1])", str(tmp_path / "ds.pt")],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    out = subprocess.run([sys.executable, "-c", LOAD, str(tmp_path / "plain.pt"), str(tmp_path / "ds.pt")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["LossScaler", "True"]
