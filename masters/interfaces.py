"""What the engine expects of each kind of component.

A registered spec class builds its implementation with ``spec.build(**context)``; the engine
then talks only to the methods below and never branches on a component's name. These are
structural protocols (``typing.Protocol``): a plugin need not inherit from them, but
``masters.testing`` checks conformance. Nothing here imports torch at run time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from masters.ratios import Ratio

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

VLMPart = Literal["vision", "projector", "language"]
VLM_PARTS: tuple[VLMPart, ...] = ("vision", "projector", "language")


@runtime_checkable
class Masker(Protocol):
    """Chooses which teacher weights are zeroed at each ratio.

    Built with ``spec.build()``. The runtime (``masters.masking``) calls :meth:`removal_order`
    once at ``r_max`` and derives every lower level as a prefix of that order, which is what makes
    masks nest and restoration exact.
    """

    spec: Any

    def removal_order(
        self,
        weights: Mapping[str, torch.Tensor],
        r_max: Ratio,
        *,
        calibration: Mapping[str, torch.Tensor] | None = None,
    ) -> Mapping[str, Any]:
        """Return, per tensor name, the order in which its entries are removed up to ``r_max``.

        Ties are broken deterministically by (|w|, flat index) or the masker's own stable key,
        and each masker unit (tensor, row, group, whole scope) realises ``r`` to within one element.
        """
        ...


@runtime_checkable
class RestoreSchedule(Protocol):
    """Maps training progress to a mask ratio over a finite set of levels."""

    spec: Any

    def levels(self) -> Sequence[Ratio]:
        """The ordered levels, first the largest ratio, last ``Ratio(0)``."""
        ...

    def ratio_at(self, progress: float) -> Ratio:
        """The level in force at ``progress`` = optimizer step / total optimizer steps, in [0, 1)."""
        ...


@dataclass(frozen=True)
class ScoredResponse:
    """What an accuracy reward sees of one banked response."""

    question: str
    response: str
    reference: str
    choices: Sequence[str] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class AccuracyReward(Protocol):
    """An offline reward in [0, 1] (rules, an embedding model, an LLM judge).

    ``score`` returns one value per item, or ``None`` for an item it could not score (an
    unreachable judge): the scoring stage leaves that row unscored and retries it on the next run.
    """

    spec: Any

    def score(self, items: Sequence[ScoredResponse]) -> list[float | None]: ...


@runtime_checkable
class DistillationReward(Protocol):
    """A reward computed in the training step from teacher and student token distributions."""

    spec: Any

    def __call__(
        self,
        teacher_logits: torch.Tensor,
        student_logits: torch.Tensor,
        response_mask: torch.Tensor,
        group_index: torch.Tensor,
    ) -> torch.Tensor:
        """Return one reward per response (shape ``[batch]``), normalised within each group."""
        ...


@runtime_checkable
class VLMAdapter(Protocol):
    """Everything the engine does with one vision-language model family.

    Built with ``spec.build(path=...)`` for a local checkpoint directory. See
    ``masters.adapters`` for the reference implementations and ``masters.testing`` for the
    conformance kit every adapter must pass.
    """

    spec: Any
    model: Any
    processor: Any

    def encode(self, samples: Sequence[Any], *, with_answers: bool = False) -> Mapping[str, Any]:
        """Turn samples (images, question, optional answer) into model inputs via the chat template."""
        ...

    def generate(self, samples: Sequence[Any], **sampling: Any) -> list[list[int]]:
        """Batched sampling: the response token ids of each sample (EOS included when produced)."""
        ...

    def teacher_force(self, samples: Sequence[Any], responses: Sequence[Sequence[int]]) -> Any:
        """One forward pass returning per-token log-probs and response-position logits only."""
        ...

    def maskable_parameters(self) -> Mapping[VLMPart, Mapping[str, torch.nn.Parameter]]:
        """In-scope 2-D linear weights, grouped by VLM part (disjoint, jointly exhaustive)."""
        ...

    def save(self, directory: str) -> None:
        """``save_pretrained`` for the model and its processor."""
        ...
