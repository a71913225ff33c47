"""Preparing a masters checkpoint for vLLM (the ``vllm`` backend's export fixes).

A checkpoint saved by masters loads in transformers as it is, but vLLM reads it differently in a
few places. :func:`prepare_checkpoint` writes a copy that vLLM loads, applying, by model type:

* **weight key names**: transformers 5 saves CLIP/SigLIP vision towers of LLaVA-style models as
  ``vision_tower.encoder...``; vLLM expects the original ``vision_tower.vision_model.encoder...``
  (LLaVA, LLaVA-NeXT, Gemma 3);
* **processor class**: masters saves image-only processor subclasses for Qwen-VL, InternVL and
  SmolVLM (their stock processors want torchvision); vLLM loads processors by their stock class
  name, which also needs a video-processor config beside it;
* **Gemma 3 vocabulary**: vLLM's Gemma 3 processing looks up the one- to four-newline tokens
  around each image; a tokenizer without them gets them in its word vocabulary (ids past the
  used ones, which no text tokenizes to, so prompts are unchanged; responses never hold them:
  the backend forbids ids past the shared vocabulary);
* then the adapter's own ``export_for_vllm(directory)`` hook, when its class defines one (a
  plugin family's fixes).

The same key renaming is applied to the tensors written for each mask level
(:func:`write_level_weights`), so a level switch reloads them under the names vLLM expects.
The prepared copy is cached under a key of the source files' names, sizes and mtimes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from masters.files import glob_escape, own_temporary, temp_sibling

EXPORT_VERSION = 2

# model_type -> prefixes of vision towers whose keys lack the ``vision_model.`` level vLLM expects
_VISION_MODEL_LEVEL: dict[str, tuple[str, ...]] = {
    "llava": ("vision_tower.", "model.vision_tower."),
    "llava_next": ("vision_tower.", "model.vision_tower."),
    "gemma3": ("vision_tower.", "model.vision_tower."),
}
# masters' image-only processor subclasses -> the stock class vLLM loads (and its video processor)
_STOCK_PROCESSORS: dict[str, tuple[str, str | None]] = {
    "Qwen2VLImageProcessor": ("Qwen2VLProcessor", "Qwen2VLVideoProcessor"),
    "Qwen2_5_VLImageProcessor": ("Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor"),
    "Qwen3VLImageProcessor": ("Qwen3VLProcessor", "Qwen3VLVideoProcessor"),
    "InternVLImageProcessor": ("InternVLProcessor", "InternVLVideoProcessor"),
    "SmolVLMImageProcessor": ("SmolVLMProcessor", "SmolVLMVideoProcessor"),
}
_WEIGHT_SUFFIXES = (".safetensors",)


def key_renamer(model_type: str) -> Callable[[str], str]:
    """The weight-name rewrite vLLM needs for checkpoints of ``model_type`` (identity if none)."""
    prefixes = _VISION_MODEL_LEVEL.get(model_type, ())

    def rename(name: str) -> str:
        for prefix in prefixes:
            if name.startswith(prefix) and not name.startswith(prefix + "vision_model."):
                return prefix + "vision_model." + name[len(prefix):]
        return name

    return rename


def source_key(src: Path) -> str:
    """A key of the checkpoint's files (names, sizes, mtimes) and of this module's fixes."""
    h = hashlib.sha256(f"export-{EXPORT_VERSION}".encode())
    for path in sorted(p for p in src.iterdir() if p.is_file()):
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def prepare_checkpoint(src: str | os.PathLike[str], cache_root: str | os.PathLike[str], *,
                       adapter: Any = None) -> Path:
    """A copy of checkpoint ``src`` that vLLM loads (cached under ``cache_root``); returns its path."""
    src = Path(src).resolve()
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    model_type = str(config.get("model_type", ""))
    dst = Path(cache_root) / f"{src.name}-{source_key(src)}"
    if (dst / ".masters-prepared").exists():
        return dst
    # Decision 18: a temporary of masters' own name, renamed into place whole; what killed preparers
    # left (their pid gone) is removed, nothing else in the cache.
    dst.parent.mkdir(parents=True, exist_ok=True)
    for stale in dst.parent.glob(f".{glob_escape(dst.name)}.masters-tmp.*"):
        if own_temporary(stale) and stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = temp_sibling(dst)
    tmp.mkdir()
    rename = key_renamer(model_type)
    for path in sorted(src.iterdir()):
        if not path.is_file():
            continue
        if path.suffix in _WEIGHT_SUFFIXES:
            _copy_weights(path, tmp / path.name, rename)
        elif path.name == "model.safetensors.index.json":
            index = json.loads(path.read_text(encoding="utf-8"))
            index["weight_map"] = {rename(k): v for k, v in index.get("weight_map", {}).items()}
            (tmp / path.name).write_text(json.dumps(index, indent=2), encoding="utf-8")
        else:
            shutil.copy2(path, tmp / path.name)
    _fix_processor(tmp)
    if model_type == "gemma3":
        _add_tokens(tmp, ["\n", "\n\n", "\n\n\n", "\n\n\n\n"])
    hook = getattr(adapter, "export_for_vllm", None)
    if callable(hook):
        hook(tmp)
    (tmp / ".masters-prepared").write_text(json.dumps({"source": str(src), "version": EXPORT_VERSION}) + "\n")
    if dst.exists():  # another process prepared it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        return dst
    os.replace(tmp, dst)
    return dst


def _copy_weights(src: Path, dst: Path, rename: Callable[[str], str]) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as handle:
        keys = list(handle.keys())
        if all(rename(k) == k for k in keys):
            shutil.copy2(src, dst)
            return
        metadata = handle.metadata() or {}
        tensors = {rename(k): handle.get_tensor(k) for k in keys}
    save_file(tensors, str(dst), metadata={**metadata, "format": "pt"})


@contextlib.contextmanager
def _saved_on_this_rank(model: Any) -> Iterator[None]:
    """transformers 5 writes nothing from ``save_pretrained`` on a ``torch.distributed`` rank other
    than 0 (``should_save_on_this_rank``). Under ``accelerate launch masters generate`` every rank's
    worker reloads its own level weights, so each rank writes them."""
    if not hasattr(model, "should_save_on_this_rank"):
        yield
        return
    model.should_save_on_this_rank = lambda is_main_process: is_main_process
    try:
        yield
    finally:
        del model.should_save_on_this_rank


def write_level_weights(model: Any, directory: str | os.PathLike[str], model_type: str,
                        prepared: str | os.PathLike[str] | None = None) -> Path:
    """Write ``model``'s current weights (a mask level's) where vLLM's in-place reload reads them.

    ``save_pretrained`` writes them under the same names as the checkpoint, which are then renamed
    as :func:`prepare_checkpoint` renames them. vLLM processes a layer once all its tensors have
    arrived, so every tensor is written, not only the masked ones (a layer given some of its
    tensors would be left half-loaded). vLLM then reads the model's processor and configs from where
    it last loaded weights, so the other files of the ``prepared`` checkpoint are copied beside them.
    """
    directory = Path(directory)
    raw = directory / "raw"
    shutil.rmtree(directory, ignore_errors=True)
    raw.mkdir(parents=True)
    with _saved_on_this_rank(model):
        model.save_pretrained(str(raw))
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in raw.iterdir()):
        from masters.errors import MastersError

        raise MastersError("save_pretrained wrote no weights for the vLLM engine's mask level", where=str(raw),
                           fix="report this with your transformers version: a level's weights must be written "
                           "by the process (rank) whose engine reloads them")
    rename = key_renamer(model_type)
    for path in sorted(raw.iterdir()):
        if path.suffix in _WEIGHT_SUFFIXES:
            _copy_weights(path, directory / path.name, rename)
        elif path.name == "model.safetensors.index.json":
            index = json.loads(path.read_text(encoding="utf-8"))
            index["weight_map"] = {rename(k): v for k, v in index.get("weight_map", {}).items()}
            (directory / path.name).write_text(json.dumps(index, indent=2), encoding="utf-8")
    shutil.rmtree(raw, ignore_errors=True)
    if prepared is not None:
        for path in sorted(Path(prepared).iterdir()):
            if path.is_file() and path.suffix not in _WEIGHT_SUFFIXES and path.name != "model.safetensors.index.json":
                shutil.copy2(path, directory / path.name)
    return directory


def _fix_processor(directory: Path) -> None:
    path = directory / "processor_config.json"
    if not path.exists():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    cls = data.get("processor_class")
    if cls not in _STOCK_PROCESSORS:
        return
    stock, video = _STOCK_PROCESSORS[cls]
    data["processor_class"] = stock
    image = data.get("image_processor") or {}
    if video and "video_processor" not in data:
        data["video_processor"] = _video_config(image, video)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tok_cfg = directory / "tokenizer_config.json"
    if tok_cfg.exists():
        tdata = json.loads(tok_cfg.read_text(encoding="utf-8"))
        if tdata.get("processor_class") == cls:
            tdata["processor_class"] = stock
            tok_cfg.write_text(json.dumps(tdata, indent=2) + "\n", encoding="utf-8")


def _video_config(image: Mapping[str, Any], video_type: str) -> dict[str, Any]:
    keep = ("do_convert_rgb", "do_normalize", "do_rescale", "do_resize", "image_mean", "image_std", "merge_size",
            "patch_size", "resample", "rescale_factor", "size", "temporal_patch_size", "crop_size")
    out = {k: v for k, v in image.items() if k in keep}
    out["video_processor_type"] = video_type
    return out


def _add_tokens(directory: Path, tokens: list[str]) -> None:
    """Give tokens missing from a fast tokenizer's vocabulary an id, without changing how any text
    tokenizes: they go into the model's vocabulary (not the added tokens, which would match in the
    text), and a whitespace pre-tokenizer never hands a word model a pre-token of newlines."""
    path = directory / "tokenizer.json"
    if not path.exists():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data.get("model", {}).get("vocab")
    added = data.get("added_tokens", [])
    if not isinstance(vocab, dict):
        return
    present = set(vocab) | {t["content"] for t in added}
    next_id = max([*vocab.values(), *(t["id"] for t in added)], default=-1) + 1
    for token in tokens:
        if token not in present:
            vocab[token] = next_id
            next_id += 1
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
