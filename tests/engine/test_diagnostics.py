"""Training diagnostics from a step's signals, by hand."""

from __future__ import annotations

import math

import torch

from masters.engine.diagnostics import answer_mask, step_diagnostics
from masters.interfaces import StepInputs


def test_diagnostics_by_hand():
    # responses: [7, 8(answer), 9(:), 5, EOS=1] and [5, EOS]; "answer :" = (8, 9)
    responses = [[7, 8, 9, 5, 1], [5, 1]]
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    lp = torch.log(torch.tensor([[0.5, 0.5, 0.5, 0.25, 0.8], [0.5, 0.4, 1.0, 1.0, 1.0]]))
    jsd = torch.tensor([[0.1, 0.1, 0.1, 0.4, 0.6], [0.2, 0.2, 0.0, 0.0, 0.0]])
    inputs = StepInputs(student_logprobs=lp, mask=mask, teacher_divergence=jsd, reference_logprobs=lp.clone(),
                        rewards={"r": torch.tensor([1.0, 0.0])}, reward_weights={"r": 1.0},
                        group_index=torch.tensor([0, 0]))
    out = step_diagnostics(inputs, responses, eos_ids=[1], answer_ids=(8, 9))
    assert answer_mask(responses, 5, (8, 9)).tolist() == [[False, False, False, True, True], [True, True] + [False] * 3]
    assert math.isclose(out["diag/jsd_answer"], (0.4 + 0.6 + 0.2 + 0.2) / 4, rel_tol=1e-6)
    assert math.isclose(out["diag/jsd_trace"], 0.1, rel_tol=1e-6)
    assert out["diag/kl_k3"] == 0.0
    assert math.isclose(out["diag/p_eos"], (0.8 + 0.4) / 2, rel_tol=1e-6)
    row0 = float(lp[0].mean())
    assert math.isclose(out["diag/logp_positive"], row0, rel_tol=1e-6)
    assert math.isclose(out["diag/logp_negative"], float(lp[1, :2].mean()), rel_tol=1e-6)
