"""The shared implementation of every built-in adapter: a transformers VLM and its processor.

Families differ only in the class attributes and the few hooks marked "family hook" below; see
``masters.adapters.families`` and :class:`masters.interfaces.VLMAdapter` for the contract.

Batches are left-padded end to end (``[pad ... pad | prompt | response]``). That is the layout
``generate`` needs, and it puts every response's last token at the last position, so the logits
that predict responses all lie in the last ``max_response_len + 1`` positions: teacher forcing asks
the model for those positions only (``logits_to_keep``) and never builds full-sequence logits.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from masters.data.types import VQASample
from masters.errors import ImageTokenMismatchError, MastersError
from masters.interfaces import VLM_PARTS, VLMPart

# Processor outputs with one value per token; everything else (pixels, grids) is per image.
TOKEN_KEYS: tuple[str, ...] = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


@dataclass
class EncodedBatch:
    """Model inputs for a batch, plus where each response token sits.

    ``inputs`` goes to ``model(**inputs)``. Response token ``j`` of sample ``i`` is
    ``response_ids[i, j]``; it is real where ``response_mask[i, j]`` and its predicting logit is at
    kept position ``response_index[i, j]`` of a forward run with ``logits_to_keep=keep``.
    """

    inputs: dict[str, torch.Tensor]
    prompt_lengths: list[int]
    response_ids: torch.Tensor  # [B, R] long, pad id where masked
    response_mask: torch.Tensor  # [B, R] bool
    response_index: torch.Tensor  # [B, R] long, into the kept logits
    keep: int  # logits_to_keep for the forward pass (R + 1)

    def to(self, device: torch.device | str) -> EncodedBatch:
        return EncodedBatch(
            {k: v.to(device) for k, v in self.inputs.items()}, self.prompt_lengths,
            self.response_ids.to(device), self.response_mask.to(device), self.response_index.to(device), self.keep,
        )


@dataclass
class TeacherForced:
    """Result of teacher-forcing responses, aligned by response-token index.

    ``logprobs[i, j]`` is log p(response token j | prompt, tokens < j) over the model's full
    vocabulary (0 where ``mask`` is False); ``logits[i, j]`` are the logits that predicted it, cut to
    ``vocab_limit`` columns when one was given. Both carry gradients when the call did.
    """

    logprobs: torch.Tensor  # [B, R]
    logits: torch.Tensor  # [B, R, V]
    mask: torch.Tensor  # [B, R] bool

    def token_loss(self) -> torch.Tensor:
        """Mean negative log-likelihood over real response tokens (the SFT loss)."""
        return -(self.logprobs * self.mask).sum() / self.mask.sum().clamp(min=1)


class HFVLMAdapter:
    """A transformers VLM (any ``*ForConditionalGeneration``) behind the :class:`VLMAdapter` protocol.

    Build it with ``spec.build(path=DIR)`` (or ``spec.build(model=..., processor=...)`` for objects
    already in memory). The model class comes from the checkpoint's ``config.json``
    (``architectures``, else ``AutoModelForImageTextToText``), so a new family needs no table here.

    **Family hooks** (everything a family customises; all public, none needs a ``_private``
    override; see CONTRIBUTING.md "Adding an adapter for a new VLM family"):

    * ``part_prefixes`` (required): parameter-name prefixes of each VLM part (``vision``,
      ``projector``, ``language``); the longest match wins, so ``model.visual.merger.``
      (projector) can sit inside ``model.visual.`` (vision);
    * :meth:`expected_image_tokens` (required): how many image tokens the vision tower produces
      for one sample's processed images, computed from the model config (checked against the
      prompt before any forward pass);
    * ``processor_class`` / :meth:`processor_class_for`: the processor to (re)load with
      (default ``AutoProcessor``; image-only subclasses where the stock one wants torchvision);
    * :meth:`processor_kwargs`: extra keyword arguments of every processor call (e.g. the spec's
      pixel bounds in the form the image processor reads; then set ``image_kwargs_from_spec``);
    * :meth:`format_images`: the processor's ``images`` argument for one sample (some processors
      want images nested per sample);
    * :meth:`merge_image_inputs`: how one per-image processor output joins across samples (default
      concatenation; :meth:`pad_and_concat` for outputs padded per sample, such as tile stacks);
    * ``position_ids_from_mask``: pass ``cumsum(attention_mask) - 1`` as positions (1-D RoPE
      families); False where the model derives its own (multimodal RoPE);
    * ``extra_linear_weights``: raw 2-D parameters used as linear maps, with their part;
    * :meth:`model_class_for`: the transformers class that loads a checkpoint (rarely needed);
    * ``tiny_checkpoint(out_dir) -> path`` (optional classmethod): a tiny checkpoint of the family,
      which the conformance kit (``masters.testing``) runs its checks on;
    * :meth:`export_for_vllm`: fixes a copy of the checkpoint needs before vLLM loads it (the
      ``vllm`` generation backend calls it after its built-in fixes; default none).

    A trainer that wraps the model (DDP, FSDP, DeepSpeed) sets ``forward_module`` to the wrapper:
    teacher forcing then runs through it so gradients synchronise; everything else reads
    ``model``.
    """

    processor_class: ClassVar[str] = "transformers:AutoProcessor"
    part_prefixes: ClassVar[Mapping[VLMPart, tuple[str, ...]]] = {}
    extra_linear_weights: ClassVar[Mapping[str, VLMPart]] = {}  # 2-D params used as linear maps
    position_ids_from_mask: ClassVar[bool] = True
    # True when processor_kwargs() hands the spec's min/max_pixels to the image processor itself;
    # False: masters resizes each image into those bounds before the processor sees it.
    image_kwargs_from_spec: ClassVar[bool] = False

    def __init__(self, spec: Any, *, path: str | Path | None = None, model: Any = None, processor: Any = None,
                 device: str | torch.device | None = None):
        self.spec = spec
        self.path = Path(path) if path is not None else None
        if model is None or processor is None:
            if path is None:
                raise MastersError("an adapter needs a checkpoint directory or a model and a processor",
                                   where=f"adapter {spec.name!r}", fix="pass path=DIR to spec.build()")
            model = model if model is not None else self._load_model(self.path)
            processor = processor if processor is not None else self._load_processor(self.path)
        self.model = model
        self.forward_module: Any = None  # set by a trainer to its wrapped model (see _forward)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        if device is not None:
            self.model.to(device)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]

    # -- loading ---------------------------------------------------------------------------------
    def model_class_for(self, config: Mapping[str, Any]) -> Any:
        """Family hook: the transformers class that loads a checkpoint, from its config.json.

        Default: the class ``config["architectures"]`` names (what ``save_pretrained`` wrote),
        else ``AutoModelForImageTextToText``, which maps every ``model_type`` transformers knows.
        """
        import transformers

        for name in config.get("architectures") or ():
            cls = getattr(transformers, str(name), None)
            if cls is not None:
                return cls
        return transformers.AutoModelForImageTextToText

    def _load_model(self, path: Path):
        from masters.adapters.attention import choose_attention
        from masters.adapters.resolve import read_checkpoint_config

        config = read_checkpoint_config(path)
        cls = self.model_class_for(config)
        dtype = "auto" if self.spec.dtype == "auto" else getattr(torch, self.spec.dtype)
        attn = choose_attention(self.spec.attn_implementation)
        from masters.files import guarded_load

        names = ", ".join(map(str, config.get("architectures") or ())) or "none"
        with guarded_load(path, "model checkpoint", fix="check that the directory holds a complete checkpoint "
                          f"(config + weights) of a model class this transformers knows (config.json architectures: "
                          f"{names}); a truncated or corrupt model.safetensors must be saved again"):
            try:
                return cls.from_pretrained(str(path), dtype=dtype, attn_implementation=attn).eval()
            except KeyError as exc:  # a config naming an unknown sub-model type
                raise ValueError(f"KeyError {exc}") from None

    def processor_class_for(self, config: Mapping[str, Any]) -> str:
        """Family hook: ``"module:Class"`` of the processor for a checkpoint's config.json."""
        return self.processor_class

    def _load_processor(self, path: Path):
        import importlib

        from masters.adapters.resolve import read_checkpoint_config

        module, _, name = self.processor_class_for(read_checkpoint_config(path)).partition(":")
        cls = getattr(importlib.import_module(module), name)
        from masters.files import guarded_load

        with guarded_load(path, "processor (tokenizer + image processor)",
                          fix="save the processor (tokenizer + image processor) beside the model"):
            try:
                processor = cls.from_pretrained(str(path))
            except TypeError as exc:
                raise ValueError(str(exc)) from None
        processor.tokenizer.padding_side = "left"
        return processor

    # -- vocabulary ------------------------------------------------------------------------------
    @property
    def eos_token_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.insert(0, self.tokenizer.eos_token_id)
        return ids

    def vocab(self) -> dict[str, int]:
        """The token-to-id map (what teacher/student compatibility is decided on)."""
        return self.tokenizer.get_vocab()

    def response_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Tokenise reference answers as responses: the answer's ids followed by EOS."""
        eos = self.eos_token_ids[0]
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts]

    def decode(self, responses: Sequence[Sequence[int]]) -> list[str]:
        return self.tokenizer.batch_decode([list(r) for r in responses], skip_special_tokens=True)

    # -- encoding --------------------------------------------------------------------------------
    def prompt_text(self, sample: VQASample) -> str:
        """The chat-templated prompt of one sample (one image placeholder per image)."""
        content = [{"type": "image"} for _ in sample.images] + [{"type": "text", "text": sample.question}]
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _images(self, sample: VQASample) -> list[Any]:
        images = sample.load_images()
        lo, hi = self.spec.min_pixels, self.spec.max_pixels
        if self.image_kwargs_from_spec or (lo is None and hi is None):
            return images
        out = []
        for im in images:  # families with fixed-size towers: bound the area before their resize
            area = im.width * im.height
            scale = math.sqrt(hi / area) if hi and area > hi else math.sqrt(lo / area) if lo and area < lo else 1.0
            if scale != 1.0:
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
            out.append(im)
        return out

    def processor_kwargs(self) -> dict[str, Any]:
        """Family hook: extra keyword arguments of every processor call that carries images
        (default none). A family whose image processor bounds the image area itself returns the
        spec's ``min_pixels`` / ``max_pixels`` here, in the form it reads, and sets
        ``image_kwargs_from_spec = True``."""
        return {}

    # Processed inputs of recently seen samples, kept up to this many bytes per adapter: training
    # encodes the same question once per response of its group and once per pass, and the
    # processor (resize, normalise, tokenise) cost more than the tiny models' forward + backward.
    processed_cache_bytes: ClassVar[int] = 256 * 2**20

    def _process_one(self, sample: VQASample) -> dict[str, torch.Tensor]:
        """The processor's tensors for one sample; cached per sample object (never mutate them)."""
        import weakref
        from collections import OrderedDict

        cache = self.__dict__.setdefault("_processed", OrderedDict())
        hit = cache.get(id(sample))
        if hit is not None and hit[0]() is sample:  # the weak reference rules out a recycled id()
            cache.move_to_end(id(sample))
            return hit[1]
        out = self._process_uncached(sample)
        size = sum(v.numel() * v.element_size() for v in out.values())
        try:
            ref = weakref.ref(sample)
        except TypeError:  # a sample type without weak references: not cached
            return out
        if size <= self.processed_cache_bytes:
            cache[id(sample)] = (ref, out, size)
            total = self.__dict__["_processed_bytes"] = self.__dict__.get("_processed_bytes", 0) + size
            while total > self.processed_cache_bytes:
                _, (_, _, dropped) = cache.popitem(last=False)
                total = self.__dict__["_processed_bytes"] = total - dropped
        return out

    def _process_uncached(self, sample: VQASample) -> dict[str, torch.Tensor]:
        text = self.prompt_text(sample)
        images = self._images(sample)
        kwargs = dict(text=[text], return_tensors="pt")
        if images:
            kwargs["images"] = self.format_images(images)
            kwargs.update(self.processor_kwargs())
        try:
            out = self.processor(**kwargs)
        except MastersError:
            raise
        except Exception as exc:
            raise MastersError(f"the processor rejected this sample: {type(exc).__name__}: {exc}",
                               where=f"sample {sample.id!r}", fix="check the sample's images and question") from None
        out = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
        self._check_image_tokens(sample, out)
        return out

    def format_images(self, images: list[Any]) -> Any:
        """Family hook: the ``images`` argument of the processor for one sample."""
        return images

    def expected_image_tokens(self, encoded: Mapping[str, torch.Tensor]) -> int:
        """Family hook: image tokens the vision tower produces for one sample's processed images."""
        raise NotImplementedError

    def image_token_id(self) -> int:
        cfg = self.model.config
        for key in ("image_token_id", "image_token_index"):
            value = getattr(cfg, key, None)
            if value is not None:
                return int(value)
        raise MastersError("the model config names no image token", where=type(self.model).__name__)

    def _check_image_tokens(self, sample: VQASample, encoded: Mapping[str, torch.Tensor]) -> None:
        found = int((encoded["input_ids"] == self.image_token_id()).sum())
        expected = self.expected_image_tokens(encoded) if sample.images else 0
        if found != expected:
            raise ImageTokenMismatchError(
                f"the prompt holds {found} image tokens but the vision tower produces {expected} for "
                f"{len(sample.images)} image(s)",
                where=f"sample {sample.id!r}",
                fix="the processor's image settings (image_seq_length, patch size, tiling) do not match the "
                "model config: save the processor that belongs to this checkpoint, and give the question no "
                "literal image tokens",
            )

    def merge_image_inputs(self, key: str, values: list[torch.Tensor]) -> torch.Tensor:
        """Family hook: join one per-image processor output (``key``, e.g. ``pixel_values``) of the
        samples that have images into the batch's tensor (default: concatenate on dim 0)."""
        return torch.cat(values, dim=0)

    @staticmethod
    def pad_and_concat(values: list[torch.Tensor], dim: int = 1) -> torch.Tensor:
        """Concatenate on dim 0 after zero-padding every other dimension up to ``dim`` (inclusive)
        to the largest size: for processor outputs padded per sample (a stack of tiles or images
        whose count varies), which the model recognises as padding by their size records or by
        being all zero."""
        if len({tuple(v.shape[1 : dim + 1]) for v in values}) > 1:
            most = [max(v.shape[d] for v in values) for d in range(1, dim + 1)]
            padded = []
            for v in values:
                out = v.new_zeros((v.shape[0], *most, *v.shape[dim + 1 :]))
                out[(slice(None), *(slice(0, n) for n in v.shape[1 : dim + 1]))] = v
                padded.append(out)
            values = padded
        return torch.cat(values, dim=0)

    def encode(self, samples: Sequence[VQASample], responses: Sequence[Sequence[int]] | None = None) -> EncodedBatch:
        """Left-padded model inputs for the prompts, with ``responses`` (token ids) appended."""
        if not samples:
            raise ValueError("encode() needs at least one sample")
        if responses is not None and len(responses) != len(samples):
            raise ValueError(f"{len(samples)} samples but {len(responses)} responses")
        per_sample = [self._process_one(s) for s in samples]
        responses = [list(r) for r in responses] if responses is not None else [[] for _ in samples]
        lengths = [int(p["input_ids"].shape[1]) + len(r) for p, r in zip(per_sample, responses)]
        total = max(lengths)
        token_keys = [k for k in TOKEN_KEYS if k in per_sample[0]]
        inputs: dict[str, torch.Tensor] = {}
        for key in token_keys:
            fill = self.pad_token_id if key == "input_ids" else 0
            rows = []
            for p, r, n in zip(per_sample, responses, lengths):
                row = p[key][0].tolist()
                row += r if key == "input_ids" else [1 if key == "attention_mask" else 0] * len(r)
                rows.append([fill] * (total - n) + row)
            inputs[key] = torch.tensor(rows, dtype=torch.long)
        image_keys = {k for p in per_sample for k in p if k not in TOKEN_KEYS}
        for key in sorted(image_keys):
            values = [p[key] for p in per_sample if key in p]
            inputs[key] = self.merge_image_inputs(key, values)
        if self.position_ids_from_mask:
            inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        r_max = max((len(r) for r in responses), default=0)
        keep = r_max + 1
        ids = torch.full((len(samples), r_max), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(samples), r_max), dtype=torch.bool)
        index = torch.zeros((len(samples), r_max), dtype=torch.long)
        for i, r in enumerate(responses):
            if r:
                ids[i, : len(r)] = torch.tensor(r)
                mask[i, : len(r)] = True
                # kept position k holds absolute position total - keep + k; token j of a response of
                # length n is predicted at absolute position total - n - 1 + j.
                index[i, : len(r)] = torch.arange(len(r)) + (keep - len(r) - 1)
        return EncodedBatch(inputs, [int(p["input_ids"].shape[1]) for p in per_sample], ids, mask, index, keep)

    # -- forward passes --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(self, batch: EncodedBatch, **kwargs: Any):
        try:
            # A trainer may wrap the model (DDP, FSDP, DeepSpeed): forward through the wrapper so
            # gradients synchronise, while everything else reads the plain model.
            module = self.forward_module if self.forward_module is not None else self.model
            return module(**batch.inputs, use_cache=False, **kwargs)
        except ValueError as exc:
            if "image" in str(exc).lower() and ("token" in str(exc).lower() or "feature" in str(exc).lower()):
                raise ImageTokenMismatchError(
                    f"image tokens and image features disagree: {exc}", where=type(self.model).__name__,
                    fix="save the processor that belongs to this checkpoint",
                ) from None
            raise

    def teacher_force(self, samples: Sequence[VQASample], responses: Sequence[Sequence[int]], *,
                      vocab_limit: int | None = None) -> TeacherForced:
        """Teacher-force ``responses`` (EOS included) in one forward pass.

        Only the response positions reach the LM head (``logits_to_keep``) and the softmax.
        Gradients flow unless the caller wraps this in ``torch.no_grad()``.
        """
        if any(len(r) == 0 for r in responses):
            raise ValueError("teacher_force() needs non-empty responses (EOS included)")
        batch = self.encode(samples, responses).to(self.device)
        out = self._forward(batch, logits_to_keep=batch.keep)
        kept = out.logits  # [B, keep, V]
        index = batch.response_index.unsqueeze(-1).expand(-1, -1, kept.shape[-1])
        logits = kept.gather(1, index)  # [B, R, V]: response positions only
        logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
        logprobs = logprobs.masked_fill(~batch.response_mask, 0.0)
        if vocab_limit is not None:
            logits = logits[..., :vocab_limit]
        return TeacherForced(logprobs=logprobs, logits=logits, mask=batch.response_mask)

    @torch.no_grad()
    def generate(self, samples: Sequence[VQASample], *, max_new_tokens: int = 256, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, repetition_penalty: float = 1.0, num_return_sequences: int = 1,
                 do_sample: bool | None = None, seed: int | None = None,
                 **generate_kwargs: Any) -> list[list[int]]:
        """Batched generation: ``len(samples) * num_return_sequences`` token-id lists, sample-major.

        Each list ends with the EOS token when the model produced one within ``max_new_tokens``.
        ``temperature=0`` (or ``do_sample=False``) is greedy decoding. ``seed`` seeds the global
        RNG for this call only. ``generate_kwargs`` go to ``model.generate`` as they are (for
        example ``logits_processor=[...]`` for per-row samplers used with ``do_sample=False``).
        """
        batch = self.encode(samples).to(self.device)
        inputs = {k: v for k, v in batch.inputs.items() if k != "position_ids"}  # generate derives them
        sample = (temperature > 0) if do_sample is None else do_sample
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=sample,
                                      num_return_sequences=num_return_sequences, pad_token_id=self.pad_token_id,
                                      eos_token_id=self.eos_token_ids, repetition_penalty=repetition_penalty)
        if sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(**inputs, **{**kwargs, **generate_kwargs})
        prompt_len = batch.inputs["input_ids"].shape[1]
        eos = set(self.eos_token_ids)
        result = []
        for row in out[:, prompt_len:].tolist():
            cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
            row = row[:cut]
            while row and row[-1] == self.pad_token_id and row[-1] not in eos:
                row.pop()
            result.append(row)
        return result

    # -- parameters ------------------------------------------------------------------------------
    def part_of(self, name: str) -> VLMPart | None:
        best: tuple[int, VLMPart | None] = (0, None)
        for part, prefixes in self.part_prefixes.items():
            for prefix in prefixes:
                if name.startswith(prefix) and len(prefix) > best[0]:
                    best = (len(prefix), part)
        return best[1]

    def linear_weight_names(self) -> list[str]:
        """Every in-scope weight: 2-D weights of ``nn.Linear`` modules and the family's extra 2-D
        projection parameters; the LM head (and anything tied to the embeddings) is out of scope."""
        out_emb = self.model.get_output_embeddings()
        in_emb = self.model.get_input_embeddings()
        excluded = {id(out_emb.weight) if out_emb is not None else None, id(in_emb.weight)}
        names = []
        for mod_name, module in self.model.named_modules():
            if isinstance(module, nn.Linear) and module.weight.dim() == 2 and id(module.weight) not in excluded:
                names.append(f"{mod_name}.weight")
        params = dict(self.model.named_parameters())
        names += [n for n in self.extra_linear_weights if n in params]
        return names

    def maskable_parameters(self) -> dict[VLMPart, dict[str, nn.Parameter]]:
        """In-scope weights grouped by VLM part (disjoint; together every in-scope weight)."""
        params = dict(self.model.named_parameters())
        parts: dict[VLMPart, dict[str, nn.Parameter]] = {p: {} for p in VLM_PARTS}
        unplaced = []
        for name in self.linear_weight_names():
            part = self.extra_linear_weights.get(name) or self.part_of(name)
            if part is None:
                unplaced.append(name)
            else:
                parts[part][name] = params[name]
        if unplaced:
            raise MastersError(
                f"{len(unplaced)} linear weight(s) belong to no VLM part, e.g. {unplaced[0]}",
                where=f"adapter {self.spec.name!r}",
                fix=f"extend {type(self).__name__}.part_prefixes to cover them",
            )
        return parts

    def export_for_vllm(self, directory: str | Path) -> None:
        """Family hook: adjust ``directory``, a copy of this checkpoint prepared for vLLM, in place
        (weight names, processor configs, tokenizer entries vLLM reads differently). Called by the
        ``vllm`` backend after its built-in fixes (``masters.backends.vllm_export``); default none."""
        return None

    # -- saving ----------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """``save_pretrained`` for the model and its processor (safetensors, no pickle)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory))
        self.processor.save_pretrained(str(directory))
        (directory / "masters_adapter.json").write_text(json.dumps({"adapter": self.spec.name}) + "\n")

