"""Conformance checks every VLM adapter must pass, on a tiny randomly initialised checkpoint.

Use it in one call (``check_adapter("my_family")``), or import the parametrised pytest test from
:mod:`masters.testing` to get one test per adapter and check. A plugin adapter supplies its tiny
checkpoint with ``check_adapter(name, model_dir=DIR)`` or a ``tiny_checkpoint(out_dir) -> path``
classmethod on its implementation class; built-in families come from :mod:`masters.models`.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ATOL = 1e-4  # batched vs one-by-one forwards: same maths, different reduction order

CHECKS: tuple[str, ...] = (
    "protocol", "finite_loss_and_backward", "padded_batch_matches_single", "batched_greedy_matches_single",
    "sampling_shapes", "save_reload_identical", "parts_cover_linear_weights", "text_only_sample",
    "image_token_mismatch_fails_fast", "mixed_image_sizes",
)
# (width, height) of the images in the mixed_image_sizes batch: squares and both orientations,
# between 32 and 64 px, so that families whose image-token count follows the image size (tiling,
# native resolution) see several counts in one batch.
MIXED_IMAGE_SIZES: tuple[tuple[int, int], ...] = ((32, 32), (64, 32), (40, 56), (48, 48))


class ConformanceError(AssertionError):
    """An adapter broke one of the conformance rules."""


def _require(condition: bool, check: str, message: str) -> None:
    if not condition:
        raise ConformanceError(f"[{check}] {message}")


@functools.lru_cache(maxsize=None)
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="masters-conformance-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=None)
def tiny_checkpoint(family: str, size: str = "tiny") -> Path:
    """A tiny checkpoint of a built-in family, built once per process."""
    from masters.models.tiny import build_tiny_model

    out = _workdir() / f"{family}-{size}"
    if not (out / "config.json").exists():
        build_tiny_model(family, size, out)
    return out


def tiny_families_for(name: str) -> list[str]:
    """Built-in tiny families whose model_type the adapter ``name`` claims."""
    from masters.models.tiny import TINY_MODEL_TYPES
    from masters.plugins import get_components

    spec_cls = get_components().registry("adapter").get(name).spec_cls
    return [f for f, t in TINY_MODEL_TYPES.items() if t in getattr(spec_cls, "model_types", ())]


def checkpoints_for(name: str, model_dir: str | Path | None = None) -> list[Path]:
    from masters.plugins import get_components

    if model_dir is not None:
        return [Path(model_dir)]
    spec_cls = get_components().registry("adapter").get(name).spec_cls
    module, _, attr = spec_cls.implementation.partition(":")
    impl = getattr(importlib.import_module(module), attr)
    if hasattr(impl, "tiny_checkpoint"):
        return [Path(impl.tiny_checkpoint(_workdir() / f"plugin-{name}"))]
    families = tiny_families_for(name)
    if not families:
        raise ConformanceError(
            f"no tiny checkpoint for adapter {name!r}: pass model_dir=..., or give its implementation a "
            "`tiny_checkpoint(out_dir)` classmethod"
        )
    return [tiny_checkpoint(f) for f in families]


def _samples():
    from masters.tasks.shapes import generate_shapes

    return generate_shapes(4, 0, 1, seed=123, max_shapes=2)["train"]


def _responses(adapter: Any, samples) -> list[list[int]]:
    """Responses of different lengths (1 to 5 tokens plus EOS) built from in-vocabulary ids."""
    base = adapter.response_ids([s.answer for s in samples])
    words = adapter.response_ids(["red blue circle square"])[0][:-1]
    return [r[:-1] + words[: i + (1 if i else 0)] + r[-1:] for i, r in enumerate(base)]


def _build(name: str, path: Path):
    from masters.plugins import get_components

    return get_components().registry("adapter").get(name).spec_cls().build(path=path)


# -- the checks ---------------------------------------------------------------------------------


def check_protocol(adapter, samples, responses, **_):
    from masters.interfaces import VLMAdapter

    _require(isinstance(adapter, VLMAdapter), "protocol", f"{type(adapter).__name__} lacks VLMAdapter methods")


def check_finite_loss_and_backward(adapter, samples, responses, **_):
    adapter.model.zero_grad(set_to_none=True)
    forced = adapter.teacher_force(samples, responses)
    loss = -(forced.logprobs * forced.mask).sum() / forced.mask.sum()
    _require(bool(loss.isfinite()), "finite_loss_and_backward", f"loss is {float(loss.detach())}")
    _require(forced.logits.shape[:2] == forced.mask.shape, "finite_loss_and_backward",
             f"logits {tuple(forced.logits.shape)} do not match mask {tuple(forced.mask.shape)}")
    _require(forced.mask.sum(1).tolist() == [len(r) for r in responses], "finite_loss_and_backward",
             "the response mask does not cover exactly the given tokens")
    loss.backward()
    grads = [p.grad for p in adapter.model.parameters() if p.grad is not None]
    _require(bool(grads) and all(bool(g.isfinite().all()) for g in grads), "finite_loss_and_backward",
             "backward gave no gradients or non-finite ones")
    _require(any(float(g.abs().sum()) > 0 for g in grads), "finite_loss_and_backward", "all gradients are zero")
    adapter.model.zero_grad(set_to_none=True)


def check_padded_batch_matches_single(adapter, samples, responses, **_):
    import torch

    with torch.no_grad():
        batch = adapter.teacher_force(samples, responses)
        for i, (s, r) in enumerate(zip(samples, responses)):
            one = adapter.teacher_force([s], [r])
            n = len(r)
            dl = float((one.logprobs[0, :n] - batch.logprobs[i, :n]).abs().max())
            dz = float((one.logits[0, :n] - batch.logits[i, :n]).abs().max())
            _require(dl <= ATOL and dz <= ATOL, "padded_batch_matches_single",
                     f"sample {i}: left-padded batch differs from a single forward (log-probs {dl:.2e}, "
                     f"logits {dz:.2e}; tolerance {ATOL}): positions or attention mask mishandle padding")


def check_batched_greedy_matches_single(adapter, samples, responses, **_):
    samples = samples[:3]
    batched = adapter.generate(samples, max_new_tokens=3, temperature=0)
    single = [adapter.generate([s], max_new_tokens=3, temperature=0)[0] for s in samples]
    _require(batched == single, "batched_greedy_matches_single",
             f"batched greedy {batched} differs from one-by-one greedy {single}")
    _require(all(1 <= len(r) <= 3 for r in batched), "batched_greedy_matches_single",
             f"response lengths {[len(r) for r in batched]} exceed max_new_tokens=3 or are empty")


def check_sampling_shapes(adapter, samples, responses, **_):
    kwargs = dict(max_new_tokens=2, temperature=1.0, top_p=0.9, top_k=50, repetition_penalty=1.05,
                  num_return_sequences=2, seed=0)
    out = adapter.generate(samples[:2], **kwargs)
    again = adapter.generate(samples[:2], **kwargs)
    _require(len(out) == 4 and all(1 <= len(r) <= 2 for r in out), "sampling_shapes",
             f"expected 4 responses of 1-2 tokens, got lengths {[len(r) for r in out]}")
    _require(out == again, "sampling_shapes", "the same seed gave different samples")


def check_save_reload_identical(adapter, samples, responses, *, name, **_):
    import torch

    with tempfile.TemporaryDirectory(prefix="masters-save-") as tmp:
        adapter.save(tmp)
        reloaded = _build(name, Path(tmp))
        with torch.no_grad():
            a = adapter.teacher_force(samples, responses)
            b = reloaded.teacher_force(samples, responses)
        _require(reloaded.vocab() == adapter.vocab(), "save_reload_identical", "the tokenizer changed on reload")
        _require(torch.equal(a.logits, b.logits), "save_reload_identical",
                 f"logits differ after save/reload by {float((a.logits - b.logits).abs().max()):.2e}")


def check_parts_cover_linear_weights(adapter, samples, responses, **_):
    from torch import nn

    from masters.interfaces import VLM_PARTS

    parts = adapter.maskable_parameters()
    _require(set(parts) == set(VLM_PARTS), "parts_cover_linear_weights", f"parts are {sorted(parts)}")
    for part, tensors in parts.items():
        _require(len(tensors) > 0, "parts_cover_linear_weights", f"part {part!r} is empty")
        _require(all(p.dim() == 2 for p in tensors.values()), "parts_cover_linear_weights",
                 f"part {part!r} holds tensors that are not 2-D")
    names = [n for tensors in parts.values() for n in tensors]
    _require(len(names) == len(set(names)), "parts_cover_linear_weights", "parts overlap")
    out_emb = adapter.model.get_output_embeddings()
    excluded = {id(out_emb.weight)} if out_emb is not None else set()
    excluded.add(id(adapter.model.get_input_embeddings().weight))
    linear = {f"{m}.weight" for m, mod in adapter.model.named_modules()
              if isinstance(mod, nn.Linear) and id(mod.weight) not in excluded}
    missing = sorted(linear - set(names))
    _require(not missing, "parts_cover_linear_weights",
             f"{len(missing)} linear weight(s) in no part, e.g. {missing[:3]}")
    params = dict(adapter.model.named_parameters())
    for n in names:
        _require(id(params[n]) not in excluded, "parts_cover_linear_weights", f"{n} is the LM head or an embedding")


def check_text_only_sample(adapter, samples, responses, **_):
    import dataclasses

    import torch

    text_only = dataclasses.replace(samples[0], id="text-only", images=())
    with torch.no_grad():
        forced = adapter.teacher_force([text_only, samples[1]], responses[:2])
    _require(bool(forced.logprobs.isfinite().all()), "text_only_sample", "non-finite log-probs for a text-only sample")
    out = adapter.generate([text_only], max_new_tokens=2, temperature=0)
    _require(len(out) == 1 and 1 <= len(out[0]) <= 2, "text_only_sample", f"generation gave {out}")


def check_image_token_mismatch_fails_fast(adapter, samples, responses, **_):
    """A prompt with more image placeholders than images must raise a MastersError, never NaN."""
    import dataclasses

    from masters.errors import MastersError

    token = adapter.tokenizer.convert_ids_to_tokens(adapter.image_token_id()) if hasattr(adapter, "image_token_id") \
        else None
    if token is None:
        return
    bad = dataclasses.replace(samples[0], id="bad", question=f"{token} {samples[0].question}")
    try:
        forced = adapter.teacher_force([bad], responses[:1])
    except MastersError:
        return
    raise ConformanceError(
        "[image_token_mismatch_fails_fast] a question holding an extra image token did not raise a MastersError "
        f"(log-probs finite: {bool(forced.logprobs.isfinite().all())})"
    )


def check_mixed_image_sizes(adapter, samples, responses, **_):
    """Images of different sizes in one batch: each prompt holds the image tokens its own image
    needs, the same count as when encoded alone, the model accepts them (transformers compares
    image tokens with image features), and batched teacher forcing and greedy decoding equal
    one-by-one."""
    import dataclasses

    import torch

    mixed = [dataclasses.replace(s, id=f"{s.id}-{w}x{h}", images=tuple(im.resize((w, h)) for im in s.load_images()))
             for s, (w, h) in zip(samples, MIXED_IMAGE_SIZES)]
    responses = responses[: len(mixed)]
    image_token = adapter.image_token_id()
    try:
        singles = [adapter.encode([s], [r]) for s, r in zip(mixed, responses)]
        batch = adapter.encode(mixed, responses)
    except Exception as exc:  # noqa: BLE001 - reported as the rule it breaks
        raise ConformanceError(
            f"[mixed_image_sizes] encoding a batch of images of sizes {list(MIXED_IMAGE_SIZES)} failed: "
            f"{type(exc).__name__}: {exc} (per-image inputs of different shapes need merge_image_inputs, e.g. "
            "pad_and_concat)") from None
    counts = (batch.inputs["input_ids"] == image_token).sum(1).tolist()
    alone = [int((one.inputs["input_ids"] == image_token).sum()) for one in singles]
    _require(counts == alone, "mixed_image_sizes",
             f"image tokens per prompt in the batch {counts} differ from one-by-one {alone} "
             f"(image sizes {list(MIXED_IMAGE_SIZES)})")
    _require(all(c > 0 for c in counts), "mixed_image_sizes", f"a prompt holds no image token: {counts}")
    with torch.no_grad():
        try:
            forced = adapter.teacher_force(mixed, responses)
        except Exception as exc:  # noqa: BLE001
            raise ConformanceError(f"[mixed_image_sizes] the model rejected a batch of images of sizes "
                                   f"{list(MIXED_IMAGE_SIZES)} (image tokens {counts}): {type(exc).__name__}: {exc}") from None
        for i, (s, r) in enumerate(zip(mixed, responses)):
            one = adapter.teacher_force([s], [r])
            n = len(r)
            dl = float((one.logprobs[0, :n] - forced.logprobs[i, :n]).abs().max())
            dz = float((one.logits[0, :n] - forced.logits[i, :n]).abs().max())
            _require(dl <= ATOL and dz <= ATOL, "mixed_image_sizes",
                     f"sample {i} ({MIXED_IMAGE_SIZES[i][0]}x{MIXED_IMAGE_SIZES[i][1]} px, {counts[i]} image tokens): "
                     f"the batch differs from a single forward (log-probs {dl:.2e}, logits {dz:.2e}; tolerance "
                     f"{ATOL}): per-image inputs of different sizes are merged or padded wrongly")
    batched = adapter.generate(mixed, max_new_tokens=2, temperature=0)
    single = [adapter.generate([s], max_new_tokens=2, temperature=0)[0] for s in mixed]
    _require(batched == single, "mixed_image_sizes",
             f"batched greedy {batched} differs from one-by-one greedy {single} for images of different sizes")


_CHECK_FUNCS: dict[str, Callable[..., None]] = {c: globals()[f"check_{c}"] for c in CHECKS}


def run_check(name: str, check: str, model_dir: str | Path | None = None) -> None:
    """Run one check on every tiny checkpoint of adapter ``name`` (raises ConformanceError)."""
    for path in checkpoints_for(name, model_dir):
        adapter = _cached_adapter(name, str(path))
        samples = _samples()
        _CHECK_FUNCS[check](adapter, samples, _responses(adapter, samples), name=name)


@functools.lru_cache(maxsize=None)
def _cached_adapter(name: str, path: str):
    return _build(name, Path(path))


def check_adapter(name: str, *, model_dir: str | Path | None = None, checks: tuple[str, ...] = CHECKS) -> dict[str, str]:
    """Run every conformance check on adapter ``name``; raise on the first failure.

    Returns ``{check: "ok"}``. ``model_dir`` points at a tiny checkpoint of the family (needed for
    plugin adapters that ship no ``tiny_checkpoint`` classmethod).
    """
    report = {}
    for check in checks:
        run_check(name, check, model_dir)
        report[check] = "ok"
    return report


@contextlib.contextmanager
def allow_plugins(*entry_points: str, strict: bool = True) -> Iterator[Any]:
    """Load exactly these installed plugins (by entry-point or distribution name) for the block.

    Autoloading is off inside it, so other installed plugins stay out; ``strict`` makes a plugin
    that fails to load an error. Yields masters' components (``.registry("adapter")`` ...); the
    previous environment and components come back afterwards. A plugin package's tests use it::

        with allow_plugins("llava_next"):
            check_adapter("llava_next")
    """
    from masters.plugins import only_plugins

    with only_plugins(*entry_points, strict=strict) as components:
        yield components


def registered_adapters() -> list[str]:
    from masters.plugins import get_components

    return get_components().registry("adapter").names()
