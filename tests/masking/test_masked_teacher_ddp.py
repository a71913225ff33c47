"""Two CPU processes (gloo), the teacher wrapped in DDP: both ranks mask identically and restore exactly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from launching import free_port

SCRIPT = textwrap.dedent(
    """
    import os, sys, torch, torch.distributed as dist
    from masters.masking.runtime import MaskedTeacher
    from masters.config import validate_component
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    original = [p.detach().clone() for p in model.parameters()]
    teacher = MaskedTeacher.from_model(ddp, validate_component("masker", "magnitude"), ["0.2", "0.1"])
    x = torch.randn(4, 32)
    for level in ("0.2", "0.1", "0.2"):
        teacher.set_level(level)
        out = ddp(x).detach()
        gathered = [torch.empty_like(out) for _ in range(2)]
        dist.all_gather(gathered, out)
        assert torch.equal(gathered[0], gathered[1])
    assert int((model[0].weight == 0).sum()) == 204
    teacher.restore()
    assert all(torch.equal(a, b) for a, b in zip(original, model.parameters()))
    # Both ranks reach teardown together: a rank that destroys the group while its peer still talks to
    # the store dies with "terminate called without an active exception" (seen in CI under load).
    dist.barrier()
    dist.destroy_process_group()
    print("rank-ok")
    """
)


@pytest.mark.slow
def test_two_process_gloo_ddp_teacher(tmp_path):
    script = tmp_path / "ddp_mask.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        # Static rendezvous on a free port, as the trainer's DDP test: the c10d rendezvous backend's
        # store thread outlived the group at exit and aborted rank 0 in CI.
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(),
         str(script)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("rank-ok") == 2
