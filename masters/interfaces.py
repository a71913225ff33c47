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
        :class:`masters.api.UnitLayout`: ``tensor.reshape(view).permute(perm)``, the
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
    ``masters.testing`` (the reward kit).
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
    needed. The engine uses it when present and the attribute ``uses_loss_divergence`` (default
    True) is true for this spec; otherwise (e.g. a temperature other than the loss's) it calls
    ``__call__``.
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


# ---------------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------------

# What an objective may ask of the training step (ObjectiveNeeds.signals):
SIGNALS: tuple[str, ...] = (
    "student_logprobs",  # per-token log-probs of the responses under the student (always computed)
    "teacher_divergence",  # per-token JSD between the current (masked) teacher and the student
    "accuracy_rewards",  # the banked rows' offline accuracy rewards
    "distillation_reward",  # the distillation rewards of spec.rewards, from the same divergence
    "reference_logprobs",  # per-token log-probs under the initial student (for a KL)
    "group_index",  # which question group each response belongs to
    "behaviour_logprobs",  # per-token log-probs under the distribution each banked row was sampled from (mu)
)


@dataclass(frozen=True)
class ObjectiveNeeds:
    """What an objective declares it needs; the trainer computes exactly this and nothing more.

    ``responses``: ``"bank"`` trains on banked groups (``n_teacher`` rows of the current teacher
    level plus ``n_student`` student rows per question); ``"reference"`` trains on the data's
    reference answers (no bank is generated). ``teacher``: ``"schedule"`` follows the restore
    schedule, ``"unmasked"`` keeps the teacher at ratio 0, ``"none"`` never loads a teacher.
    ``signals``: a subset of :data:`SIGNALS`.
    """

    responses: Literal["bank", "reference"]
    teacher: Literal["schedule", "unmasked", "none"]
    signals: frozenset[str] = frozenset({"student_logprobs"})

    def __post_init__(self) -> None:
        unknown = set(self.signals) - set(SIGNALS)
        if unknown:
            raise ValueError(f"unknown signal(s) {sorted(unknown)}; known: {', '.join(SIGNALS)}")
        if self.teacher == "none" and {"teacher_divergence", "distillation_reward"} & set(self.signals):
            raise ValueError("an objective without a teacher cannot ask for teacher_divergence or distillation_reward")
        if self.responses == "reference" and {"accuracy_rewards", "distillation_reward"} & set(self.signals):
            raise ValueError("rewards are defined on banked groups: responses must be 'bank'")

    def wants(self, signal: str) -> bool:
        return signal in self.signals


@dataclass
class StepInputs:
    """What the trainer hands an objective for one micro-batch; fields it did not declare are None.

    Per-token tensors are ``[B, T]`` over response positions (``mask`` marks real tokens, EOS
    included); ``rewards`` maps each reward key to its ``[B]`` values and ``reward_weights`` to its
    weight; ``reduction`` is ``training.token_averaging``.
    """

    student_logprobs: torch.Tensor
    mask: torch.Tensor
    reduction: Literal["sequence", "token"] = "sequence"
    teacher_divergence: torch.Tensor | None = None
    rewards: dict[str, torch.Tensor] | None = None
    reward_weights: dict[str, float] | None = None
    reference_logprobs: torch.Tensor | None = None
    group_index: torch.Tensor | None = None
    behaviour_logprobs: torch.Tensor | None = None
    step: int = 0


@dataclass
class ObjectiveLoss:
    """The objective's scalar loss (differentiable) and the scalars it logs (``loss/total`` included)."""

    total: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    # The weighted terms that sum to ``total`` (e.g. policy, kl, distill), for per-term gradient
    # norms (``training.diagnostics_every``); an objective may leave it empty.
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class Objective(Protocol):
    """What the training step optimises (built with ``spec.build()``).

    The trainer computes the signals the spec's ``requirements()`` declares and calls ``loss`` once
    per micro-batch; the objective never loads models or reads the bank itself.
    """

    spec: Any

    def loss(self, inputs: StepInputs) -> ObjectiveLoss: ...


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class Task(Protocol):
    """A data source (built with ``spec.build()``): the three splits as lists of ``VQASample``.

    Deterministic: the same spec gives the same samples with the same ids in the same order; ids
    are unique across splits, and no record is shared between splits. An empty train split is an
    error (``DataError``), never an empty list.
    """

    spec: Any

    def splits(self) -> Mapping[str, Sequence[Any]]:
        """``{"train": [...], "validation": [...], "test": [...]}``."""
        ...


# ---------------------------------------------------------------------------------------------
# Generation backends
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendCapabilities:
    """What a generation backend guarantees (the bank refuses to mix backends whose rows differ).

    ``per_row_seeds``: each row is sampled from its own seed, independently of batching and order,
    so a resumed bank equals an uninterrupted one. ``rows_equal_hf``: its rows equal the ``hf``
    backend's row for row (same sampler), so banks are shared across the two. ``behaviour_logprobs``:
    it returns, per token, the log-prob under the distribution actually sampled from.
    """

    per_row_seeds: bool = True
    rows_equal_hf: bool = False
    behaviour_logprobs: bool = False


@dataclass(frozen=True)
class SamplingSettings:
    """The generation spec's sampling parameters (temperature 0 is greedy)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 256


@dataclass
class GeneratedResponse:
    """One sampled response: token ids, cut after the first EOS (kept), and optionally the
    behaviour log-prob of each token."""

    token_ids: list[int]
    behaviour_logprobs: list[float] | None = None


@runtime_checkable
class GenerationSession(Protocol):
    """One model opened by a backend, at a mask level the generation stage sets."""

    eos_token_ids: list[int]

    def vocab(self) -> Mapping[str, int]:
        """The model's token-to-id map (teacher/student compatibility is checked on it)."""
        ...

    def set_level(self, level: Ratio) -> None:
        """Move the (teacher's) mask to ``level``; a no-op for a session opened without a masker."""
        ...

    def generate(self, samples: Sequence[Any], seeds: Sequence[int], settings: SamplingSettings
                 ) -> list[GeneratedResponse]:
        """One response per sample (repeat a sample for several), row ``i`` sampled from ``seeds[i]``."""
        ...

    def decode(self, responses: Sequence[Sequence[int]]) -> list[str]: ...

    def close(self) -> None:
        """Release the model (and restore masked weights exactly)."""
        ...


@runtime_checkable
class GenerationBackend(Protocol):
    """An engine that samples the response bank (built with ``spec.build()``).

    Guarantees every backend keeps (``masters.testing`` checks them): with ``per_row_seeds`` a row
    depends only on its sample and seed; ids of padding, image placeholders and other special
    tokens (EOS excepted) are never sampled, nor ids at or above ``vocab_limit``; a response stops
    after its first EOS (kept) or at ``max_new_tokens``.
    """

    spec: Any
    capabilities: BackendCapabilities

    def open(self, model: Any, *, vocab_limit: int, masker: Any = None,
             levels: Sequence[Ratio] = ()) -> GenerationSession:
        """Open ``model`` (a run spec's model entry: ``path`` and optional ``adapter``), masked by
        ``masker`` over ``levels`` when given (a teacher), for sampling."""
        ...
