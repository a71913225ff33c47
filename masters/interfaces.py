"""What the engine expects of each kind of component.

A registered spec class builds its implementation with ``spec.build(**context)``; the engine
then talks only to the methods below and never branches on a component's name. These are
structural protocols (``typing.Protocol``): a plugin need not inherit from them, but
``masters.testing`` checks conformance. Nothing here imports torch at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from masters.ratios import Ratio

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from masters.masking.layout import UnitLayout

VLMPart = Literal["vision", "projector", "language"]
VLM_PARTS: tuple[VLMPart, ...] = ("vision", "projector", "language")


@runtime_checkable
class Masker(Protocol):
    """Chooses which teacher weights are zeroed at each ratio (built with ``spec.build()``).

    A masker only *scores*; the runtime (:class:`masters.masking.MaskedTeacher`) selects. Each
    tensor splits into ``U`` units of ``S`` elements (:meth:`units`, a *unit layout*); at ratio
    ``r`` every unit masks its ``floor(r * S)`` lowest-scoring elements, ties broken by position
    inside the unit (the layout's order, documented in :mod:`masters.masking.layout`). The runtime
    ranks once at ``r_max`` and keeps per-unit thresholds, so every level is a prefix of one
    ranking: masks nest, each unit realises its ratio exactly, and ratio 0 restores every weight
    bit for bit, in every memory mode. Scores must be deterministic elementwise functions of their
    inputs (and of the flat positions): the stored memory mode re-scores the stored masked values
    at each level switch rather than keeping an index order.

    ``scope = "global"`` makes the whole scope one unit (one threshold over every tensor, ties
    broken by tensor order then flat index; :meth:`units` is not called). ``needs_calibration =
    True`` makes the runtime require per-tensor input norms (``masters.masking.collect_input_norms``).
    ``masters.testing.maskers.check_masker(name)`` is the conformance kit every masker must pass.
    """

    spec: Any
    scope: Literal["unit", "global"]
    needs_calibration: bool

    def units(self, name: str, shape: Sequence[int]) -> tuple[int, int] | UnitLayout:
        """How the tensor ``name`` of ``shape`` splits into units.

        ``(U, S)`` with ``U * S == numel`` means contiguous units: unit ``u`` is the flat range
        ``[u * S, (u + 1) * S)``, positions in flat order (per tensor ``(1, numel)``, per row
        ``(numel // in, in)``, per expert of a 3-D MoE weight ``(E, numel // E)``, N:M groups along
        the input dimension ``(numel // M, M)``). Any other unit is a
        :class:`masters.masking.layout.UnitLayout`: ``tensor.reshape(view).permute(perm)``, the
        first ``unit_dims`` dimensions numbering the units and the rest the positions inside one,
        row-major. Its constructors cover the usual ones: ``UnitLayout.rows(shape)``,
        ``.columns(shape)`` (``S = out``, ties by row), ``.blocks(shape, (bh, bw))`` (ties row by
        row inside the tile), ``.groups(shape, m, dim)`` (N:M along any dimension),
        ``.experts(shape)``, ``.tensor(shape)``. A layout that does not cover the tensor exactly, an
        unknown return type or a shape a constructor cannot split (``LayoutError``) is refused with
        a MastersError naming the masker, the tensor and the fix; raise one yourself for tensors
        this masker cannot split.
        """
        ...

    def scores(
        self,
        name: str,
        values: torch.Tensor,
        *,
        shape: Sequence[int],
        positions: Callable[[], torch.Tensor | None],
        calibration: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """float32 scores of ``values`` (same shape); lower is masked first.

        ``values`` is either the whole tensor in flat order (viewed ``[U, S]`` for contiguous
        units, in the parameter's own ``shape`` for any other layout; ``positions()`` is then None),
        or a subset viewed ``[U, C]``: row ``u`` holds elements of unit ``u`` in the unit's order,
        and ``positions()`` gives their flat indices, same shape (computed only if asked for). A
        subset's scores must equal the whole tensor's at those positions. ``shape`` is the
        parameter's shape; ``calibration`` is this tensor's input-feature norms when the masker
        needs them. The runtime ranks scores in the layout's order; a masker never permutes.
        """
        ...

    def check_levels(self, levels: Sequence[Ratio]) -> None:
        """Raise a MastersError for levels this masker cannot realise (N:M: multiples of 1/M)."""
        ...


@runtime_checkable
class RestoreSchedule(Protocol):
    """Maps training progress to a mask ratio over a finite, ordered set of levels.

    Progress is optimizer step / total optimizer steps; pass a ``fractions.Fraction`` (or use
    ``ratio_at_step``) to stay exact. Several teachers are chained by
    :class:`masters.schedules.chain.TeacherChain`, which maps a global step to (teacher, level).
    """

    spec: Any

    def levels(self) -> Sequence[Ratio]:
        """The ordered levels, largest first; the last is ``Ratio(0)`` except for a constant mask,
        whose single level is its ratio. Banks are generated at exactly these levels."""
        ...

    def stage_at(self, progress: Any) -> int:
        """Index into :meth:`levels` in force at ``progress`` in [0, 1] (1 or more: the last)."""
        ...

    def ratio_at(self, progress: Any) -> Ratio:
        """``levels()[stage_at(progress)]``."""
        ...


@dataclass(frozen=True)
class ScoredResponse:
    """What an accuracy reward sees of one banked response.

    ``question``: the prompt text (no image); ``response``: the decoded response; ``reference``:
    the dataset's answer; ``choices``: the options of a multiple-choice question, in letter order
    (A, B, ...), else ``None``; ``metadata``: anything else the bank row carries (ids, source).
    """

    question: str
    response: str
    reference: str
    choices: Sequence[str] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class AccuracyReward(Protocol):
    """An offline reward in [0, 1] (rules, an embedding model, an LLM judge).

    Built with ``spec.build(**context)`` (the engine may pass context such as the judge model; a
    reward that needs context it did not get raises ``MastersError`` saying which). ``score``
    returns one value per item, in order: a float in [0, 1], or ``None`` for an item it could not
    score *now* (an unreachable judge): the scoring stage leaves that row unscored and retries it
    on the next run. A rule that simply finds no answer returns 0.0, not ``None``. An item's score
    must depend only on that item (the stage batches rows as it likes). Check a new reward with
    ``masters.rewards.testing.check_accuracy_reward``.
    """

    spec: Any

    def score(self, items: Sequence[ScoredResponse]) -> list[float | None]: ...


@runtime_checkable
class DistillationReward(Protocol):
    """A reward computed in the training step from teacher and student token distributions.

    Built with ``spec.build(vocab_size=...)`` (optional context: the shared vocabulary length of
    decision 12). Rewards are returned detached: they weight the policy gradient, they are not a
    loss.

    Optional fast path (design decision 7): an implementation whose divergence is the engine's
    JSD loss may also define ``from_token_divergence(token_divergence, response_mask,
    group_index) -> Tensor[batch]``, taking the per-token values ``[batch, tokens]`` the loss
    already computed (``masters.rewards.jsd.jsd_loss``), so no second pass over the vocabulary is
    needed. The engine uses it when present and falls back to ``__call__`` otherwise.
    """

    spec: Any

    def __call__(
        self,
        teacher_logits: torch.Tensor,
        student_logits: torch.Tensor,
        response_mask: torch.Tensor,
        group_index: torch.Tensor,
    ) -> torch.Tensor:
        """One reward per response (shape ``[batch]``), normalised within each group.

        ``teacher_logits`` ``[batch, tokens, V_t]`` and ``student_logits`` ``[batch, tokens, V_s]``
        at the response positions, aligned by response-token index; ``response_mask``
        ``[batch, tokens]`` (bool) marks real response tokens (EOS included); ``group_index``
        ``[batch]`` gives each response's question group (any integer ids). Implementations may
        accept a keyword ``vocab_size`` to cut both logits to the shared vocabulary.
        """
        ...


@runtime_checkable
class VLMAdapter(Protocol):
    """Everything the engine does with one vision-language model family.

    Built with ``spec.build(path=DIR)`` for a local checkpoint directory (or
    ``spec.build(model=..., processor=...)`` for objects in memory); usually through
    ``masters.adapters.resolve_adapter(model_spec)``, which picks the adapter from config.json.
    Samples are :class:`masters.data.VQASample`. A new family rarely needs more than a subclass of
    ``masters.adapters.base.HFVLMAdapter`` that sets its processor class and part prefixes and
    counts its image tokens; ``masters.testing.check_adapter(name)`` is the conformance kit every
    adapter must pass.

    Conventions every implementation keeps:

    * **Responses are token-id lists ending with EOS** (when the model produced one). They are what
      the bank stores and what teacher forcing replays, so teacher and student are aligned by
      response-token index even when their prompts differ in length.
    * **Left padding everywhere.** Batched results equal one-by-one results (to float tolerance).
    * **Response positions only.** ``teacher_force`` never materialises full-sequence logits or a
      full-sequence softmax.
    * **Image tokens are counted** against what the vision tower will produce before any forward
      pass; a mismatch raises ``ImageTokenMismatchError`` naming the sample.
    """

    spec: Any
    model: Any  # the torch module (``transformers`` PreTrainedModel for the built-ins)
    processor: Any  # tokenizer + image processor, saved beside the model
    tokenizer: Any

    def vocab(self) -> Mapping[str, int]:
        """The token-to-id map; teacher/student compatibility is decided on it (never ``vocab_size``)."""
        ...

    @property
    def eos_token_ids(self) -> list[int]:
        """Ids that end a response; the first is appended by :meth:`response_ids`."""
        ...

    def response_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Reference answers as responses: each text's token ids followed by EOS."""
        ...

    def decode(self, responses: Sequence[Sequence[int]]) -> list[str]:
        """Response token ids to text, special tokens (EOS) dropped."""
        ...

    def encode(self, samples: Sequence[Any], responses: Sequence[Sequence[int]] | None = None) -> Any:
        """Chat-templated, processed, left-padded model inputs of the prompts with ``responses``
        appended (``EncodedBatch``: ``inputs`` for ``model(**inputs)`` plus response ids, mask and
        the index of each response token's predicting logit). Images are bounded by the spec's
        ``min_pixels`` / ``max_pixels``."""
        ...

    def generate(
        self,
        samples: Sequence[Any],
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        num_return_sequences: int = 1,
        do_sample: bool | None = None,
        seed: int | None = None,
        **generate_kwargs: Any,
    ) -> list[list[int]]:
        """Batched generation: ``len(samples) * num_return_sequences`` response token-id lists,
        sample-major, each cut after its first EOS. ``temperature=0`` is greedy. Extra keyword
        arguments reach the backend's generate unchanged (e.g. ``logits_processor``)."""
        ...

    def teacher_force(
        self, samples: Sequence[Any], responses: Sequence[Sequence[int]], *, vocab_limit: int | None = None
    ) -> Any:
        """One forward pass over prompts + ``responses`` (EOS included), returning
        ``TeacherForced(logprobs [B, R], logits [B, R, V], mask [B, R])`` for response positions
        only, aligned by response-token index. ``logprobs`` are over the model's full vocabulary;
        ``logits`` are cut to ``vocab_limit`` columns when given (the shared vocabulary of
        ``check_compatible``). Differentiable unless called under ``torch.no_grad()``."""
        ...

    def maskable_parameters(self) -> Mapping[VLMPart, Mapping[str, torch.nn.Parameter]]:
        """In-scope weights by VLM part: 2-D weights of linear layers (and the family's 2-D
        projection parameters); embeddings, norms, biases and the LM head excluded. Parts are
        non-empty, disjoint and together cover every in-scope weight. Keys are
        ``model.named_parameters()`` names."""
        ...

    def save(self, directory: str) -> None:
        """``save_pretrained`` for the model and its processor (safetensors)."""
        ...
