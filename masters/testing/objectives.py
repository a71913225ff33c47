"""Conformance checks every training objective must pass, on small random step inputs.

``check_objective("my_objective")`` runs them all; ``run_objective_check(name, check)`` runs one,
for a pytest parametrisation over ``registered_objectives()`` x ``OBJECTIVE_CHECKS``. The step
inputs are built the way the trainer builds them (:class:`masters.interfaces.StepInputs`): exactly
the signals the spec's ``requirements()`` declares, ``None`` for every other field. Per-token
tensors are ``[B, T]`` with a mask of responses of different lengths; the student's log-probs (and
the per-token divergence, which depends on the student in the trainer) require grad; rewards are
keyed by reward name with a weight each, one accuracy reward (``exact_match``) and one
distillation reward (``jsd_distill``) as declared, varying within every group.

Checks (``OBJECTIVE_CHECKS``):

* ``requirements``: ``spec.requirements()`` is an :class:`~masters.interfaces.ObjectiveNeeds` (valid
  ``responses``, ``teacher`` and a subset of ``SIGNALS`` holding ``student_logprobs``), the same on
  every call; the built implementation is an :class:`~masters.interfaces.Objective`.
* ``loss``: with the declared signals only, for both token reductions, ``loss()`` gives an
  :class:`~masters.interfaces.ObjectiveLoss` whose ``total`` is a finite 0-d tensor with a gradient
  path to the student (``student_logprobs`` or ``teacher_divergence``), finite gradients, and
  ``metrics`` of finite floats holding ``loss/total`` equal to ``total``.
* ``padding_ignored``: values at padded positions (mask False) change neither the loss nor get a
  gradient.
* ``undeclared_ignored``: every undeclared signal given anyway, as NaN, leaves the loss unchanged
  (the trainer never computes what was not declared, so an objective must never read it).
* ``deterministic``: the same inputs give the same loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from masters.testing.adapters import ConformanceError
from masters.testing.examples import NotApplicable, resolve_spec, spec_label, run_checks

__all__ = ["OBJECTIVE_CHECKS", "ObjectiveConformanceError", "check_objective", "registered_objectives",
           "run_objective_check", "step_inputs"]

OBJECTIVE_CHECKS: tuple[str, ...] = ("requirements", "loss", "padding_ignored", "undeclared_ignored", "deterministic")
ACCURACY_KEY = "exact_match"
DISTILLATION_KEY = "jsd_distill"
# groups of 4 responses (2 groups), 1 to 6 tokens each
GROUPS = (0, 0, 0, 0, 1, 1, 1, 1)
LENGTHS = (6, 3, 1, 4, 2, 6, 5, 3)


class ObjectiveConformanceError(ConformanceError):
    """An objective broke one of the conformance rules."""


def registered_objectives() -> list[str]:
    from masters.plugins import get_components

    return get_components().registry("objective").names()


def _fail(check: str, label: str, message: str) -> None:
    raise ObjectiveConformanceError(f"[{check}] {label}: {message}")


# Per-token signals: how the kit fills each one (the trainer computes them from the models).
#   "divergence": the per-token JSD in [0, ln 2], which depends on the student (requires grad);
#   "logprobs": log-probs of the same tokens under another distribution (no grad).
PER_TOKEN_SIGNALS: dict[str, str] = {
    "teacher_divergence": "divergence",
    "reference_logprobs": "logprobs",
    "behaviour_logprobs": "logprobs",
}
REWARD_SIGNALS = ("accuracy_rewards", "distillation_reward")


def step_inputs(needs: Any, *, reduction: str = "sequence", seed: int = 0, padding: float = 0.0,
                poison_undeclared: bool = False) -> Any:
    """:class:`~masters.interfaces.StepInputs` holding exactly the signals ``needs`` declares.

    ``padding`` is written at every padded position of the per-token tensors; with
    ``poison_undeclared`` every undeclared field holds NaN values (group ids: one group per row)
    instead of ``None``.
    """
    import dataclasses

    import torch

    from masters.interfaces import SIGNALS, StepInputs

    fields = {f.name for f in dataclasses.fields(StepInputs)}
    unknown = sorted(set(needs.signals) - set(PER_TOKEN_SIGNALS) - set(REWARD_SIGNALS)
                     - {"student_logprobs", "group_index"})
    if unknown:
        raise ObjectiveConformanceError(f"[inputs] the kit cannot build the signal(s) {unknown} (known: {SIGNALS}): "
                                        "masters.testing.objectives.PER_TOKEN_SIGNALS needs them")
    g = torch.Generator().manual_seed(seed)
    batch, tokens = len(GROUPS), max(LENGTHS)
    mask = torch.arange(tokens).unsqueeze(0) < torch.tensor(LENGTHS).unsqueeze(1)

    def per_token(values: torch.Tensor) -> torch.Tensor:
        return values.masked_fill(~mask, padding)

    logits = torch.randn(batch, tokens, 12, generator=g)
    student = per_token(torch.log_softmax(logits, -1)[..., 0]).requires_grad_(True)
    nan = float("nan")
    inputs = StepInputs(student_logprobs=student, mask=mask, reduction=reduction, step=3)
    for signal, how in PER_TOKEN_SIGNALS.items():
        if signal not in fields:
            continue
        if how == "divergence":
            value = per_token(torch.rand(batch, tokens, generator=g) * math.log(2)).requires_grad_(True)
        else:
            other = logits + 0.3 * torch.randn(logits.shape, generator=g)
            value = per_token(torch.log_softmax(other, -1)[..., 0])
        if needs.wants(signal):
            setattr(inputs, signal, value)
        elif poison_undeclared:
            setattr(inputs, signal, torch.full_like(value.detach(), nan))
    if needs.wants("group_index"):
        inputs.group_index = torch.tensor(GROUPS)
    elif poison_undeclared:
        inputs.group_index = torch.arange(batch) * 1000 + 17
    rewards: dict[str, Any] = {}
    weights: dict[str, float] = {}
    if needs.wants("accuracy_rewards"):
        rewards[ACCURACY_KEY] = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
        weights[ACCURACY_KEY] = 1.0
    if needs.wants("distillation_reward"):
        rewards[DISTILLATION_KEY] = torch.tensor([1.0, 0.0, 0.4, 0.7, 0.0, 0.2, 1.0, 0.5])
        weights[DISTILLATION_KEY] = 0.5
    if rewards:
        inputs.rewards, inputs.reward_weights = rewards, weights
    elif poison_undeclared:
        inputs.rewards = {ACCURACY_KEY: torch.full((batch,), nan), DISTILLATION_KEY: torch.full((batch,), nan)}
        inputs.reward_weights = {ACCURACY_KEY: nan, DISTILLATION_KEY: nan}
    return inputs


class _Case:
    def __init__(self, objective: Any):
        spec, context = resolve_spec("objective", objective)
        self.spec = spec
        self.label = spec_label(spec)
        self.needs = spec.requirements()
        self.impl = spec.build(**context)

    def loss(self, inputs: Any, check: str) -> Any:
        import warnings

        from masters.interfaces import ObjectiveLoss

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a group-signal warning: not what is checked here
            try:
                out = self.impl.loss(inputs)
            except Exception as exc:  # noqa: BLE001 - reported with the inputs it was given
                given = sorted(k for k in (*PER_TOKEN_SIGNALS, "rewards", "group_index")
                               if getattr(inputs, k, None) is not None)
                _fail(check, self.label, f"loss() raised {type(exc).__name__}: {exc} (declared signals "
                      f"{sorted(self.needs.signals)}; given student_logprobs, mask and {given or 'nothing else'})")
        if not isinstance(out, ObjectiveLoss):
            _fail(check, self.label, f"loss() returned {type(out).__name__}, not masters.interfaces.ObjectiveLoss")
        return out


def _student_inputs(inputs: Any) -> list[Any]:
    return [t for t in (inputs.student_logprobs, inputs.teacher_divergence) if t is not None and t.requires_grad]


def check_requirements(case: _Case) -> None:
    from masters.interfaces import SIGNALS, Objective, ObjectiveNeeds

    needs = case.needs
    if not isinstance(needs, ObjectiveNeeds):
        _fail("requirements", case.label, f"requirements() returned {type(needs).__name__}, not ObjectiveNeeds")
    if needs.responses not in ("bank", "reference") or needs.teacher not in ("schedule", "unmasked", "none"):
        _fail("requirements", case.label, f"responses {needs.responses!r} / teacher {needs.teacher!r} are not "
              "bank|reference / schedule|unmasked|none")
    if not set(needs.signals) <= set(SIGNALS) or "student_logprobs" not in needs.signals:
        _fail("requirements", case.label, f"signals {sorted(needs.signals)} must be a subset of {SIGNALS} holding "
              "student_logprobs")
    if case.spec.requirements() != needs:
        _fail("requirements", case.label, "requirements() differs between two calls")
    if not isinstance(case.impl, Objective):
        _fail("requirements", case.label, f"{type(case.impl).__name__} lacks `spec` or loss(inputs)")


def check_loss(case: _Case) -> None:
    import torch

    for reduction in ("sequence", "token"):
        inputs = step_inputs(case.needs, reduction=reduction)
        out = case.loss(inputs, "loss")
        where = f"{case.label} (reduction {reduction!r})"
        total = out.total
        if not isinstance(total, torch.Tensor) or total.dim() != 0:
            _fail("loss", where, f"total is {type(total).__name__} {getattr(total, 'shape', '')}, not a 0-d tensor")
        if not bool(torch.isfinite(total)):
            _fail("loss", where, f"total is {float(total.detach())}")
        sources = _student_inputs(inputs)
        if not total.requires_grad:
            _fail("loss", where, "total has no gradient: it must depend on student_logprobs (or teacher_divergence)")
        grads = torch.autograd.grad(total, sources, allow_unused=True)
        if all(g is None for g in grads):
            _fail("loss", where, "total has no gradient path to student_logprobs or teacher_divergence")
        if not all(bool(torch.isfinite(g).all()) for g in grads if g is not None):
            _fail("loss", where, "gradients are not finite")
        metrics = out.metrics
        if not isinstance(metrics, dict) or "loss/total" not in metrics:
            _fail("loss", where, f"metrics {sorted(metrics) if isinstance(metrics, dict) else metrics!r} lack 'loss/total'")
        bad = {k: v for k, v in metrics.items() if not (isinstance(k, str) and isinstance(v, float) and math.isfinite(v))}
        if bad:
            _fail("loss", where, f"metrics {bad} are not finite floats keyed by name")
        if not math.isclose(metrics["loss/total"], float(total.detach()), rel_tol=1e-5, abs_tol=1e-6):
            _fail("loss", where, f"metrics['loss/total'] is {metrics['loss/total']} but total is {float(total.detach())}")


def check_padding_ignored(case: _Case) -> None:
    import torch

    for reduction in ("sequence", "token"):
        where = f"{case.label} (reduction {reduction!r})"
        clean = step_inputs(case.needs, reduction=reduction)
        padded = step_inputs(case.needs, reduction=reduction, padding=-37.0)
        a = case.loss(clean, "padding_ignored").total
        b = case.loss(padded, "padding_ignored").total
        if not torch.allclose(a.detach(), b.detach(), rtol=1e-5, atol=1e-6):
            _fail("padding_ignored", where, f"values at padded positions changed the loss ({float(a.detach())} -> {float(b.detach())}): "
                  "reduce over mask positions only")
        sources = _student_inputs(padded)
        for name, tensor, grad in zip(("student_logprobs", "teacher_divergence"), sources,
                                      torch.autograd.grad(b, sources, allow_unused=True)):
            if grad is not None and bool((grad[~padded.mask] != 0).any()):
                _fail("padding_ignored", where, f"padded positions of {name} get a gradient")


def check_undeclared_ignored(case: _Case) -> None:
    import torch

    from masters.interfaces import SIGNALS

    undeclared = sorted(set(SIGNALS) - set(case.needs.signals))
    if not undeclared:
        raise NotApplicable(f"{case.label} declares every signal")
    for reduction in ("sequence", "token"):
        a = case.loss(step_inputs(case.needs, reduction=reduction), "undeclared_ignored").total
        b = case.loss(step_inputs(case.needs, reduction=reduction, poison_undeclared=True), "undeclared_ignored").total
        if not torch.equal(a.detach(), b.detach()):
            _fail("undeclared_ignored", f"{case.label} (reduction {reduction!r})",
                  f"the undeclared signals {undeclared}, given as NaN, changed the loss ({float(a.detach())} -> {float(b.detach())}): "
                  "the trainer computes only what requirements() declares, so declare what loss() reads")


def check_deterministic(case: _Case) -> None:
    import torch

    a = case.loss(step_inputs(case.needs), "deterministic").total
    b = case.loss(step_inputs(case.needs), "deterministic").total
    if not torch.equal(a.detach(), b.detach()):
        _fail("deterministic", case.label, f"the same inputs gave {float(a.detach())} then {float(b.detach())}")


_CHECKS = {"requirements": check_requirements, "loss": check_loss, "padding_ignored": check_padding_ignored,
           "undeclared_ignored": check_undeclared_ignored, "deterministic": check_deterministic}
assert tuple(_CHECKS) == OBJECTIVE_CHECKS


def run_objective_check(objective: Any, check: str) -> None:
    """Run one check on an objective (a registered name, a mapping with ``name``, a spec class or a
    spec); raises :class:`ObjectiveConformanceError`, or :class:`NotApplicable`."""
    if check not in _CHECKS:
        raise ValueError(f"unknown objective check {check!r}; checks: {', '.join(OBJECTIVE_CHECKS)}")
    _CHECKS[check](_Case(objective))


def check_objective(objective: Any, *, checks: Iterable[str] = OBJECTIVE_CHECKS) -> dict[str, str]:
    """Run the checks on an objective; ``{check: "ok" | "n/a: why"}``; raises on the first failure."""
    case = _Case(objective)
    return run_checks("objective", _CHECKS, case, checks)
