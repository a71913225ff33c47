"""Write a masked teacher checkpoint (``save_pretrained``) plus its sparsity report.

External engines (vLLM, ...) can then generate from the masked teacher directly. The model is
loaded with transformers from a local directory; parts are classified by module-name rules
(:func:`masters.masking.scope.find_maskable`) until the adapter layer takes over (pass
``maskable`` from ``VLMAdapter.maskable_parameters()``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from masters.errors import MastersError
from masters.files import atomic_directory, glob_escape, own_temporary
from masters.ratios import Ratio

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
REPORT_NAME = "masking_report.json"


def load_model(path: str | Path) -> Any:
    """The model of a local checkpoint directory (image-text-to-text first, then causal LM)."""
    from transformers import AutoConfig

    path = Path(path)
    if not (path / "config.json").exists():
        raise MastersError("no config.json: not a checkpoint directory", where=str(path),
                           fix="point teachers[*].path at a directory written by save_pretrained")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    for auto in (AutoModelForImageTextToText, AutoModelForCausalLM):
        try:
            return auto.from_pretrained(path, local_files_only=True, dtype="auto").eval()
        except ValueError:
            continue  # this auto class does not know the config type
    raise MastersError(f"transformers cannot load model type {config.model_type!r}", where=str(path),
                       fix="install a transformers version that supports it, or the adapter plugin for this family")


def export_masked_checkpoint(
    source: str | Path, out: str | Path, masker_spec: Any, level: Ratio | float | str,
    *, maskable: Mapping[str, Mapping[str, Any]] | None = None, model: Any = None,
) -> Any:
    """Mask the checkpoint at ``source`` to ``level`` and save it to ``out`` with its report."""
    from masters.masking.runtime import MaskedTeacher, _as_ratio

    level = _as_ratio(level, where="--level")
    source, out = Path(source), Path(out)
    if out.exists() and any(out.iterdir()):
        raise MastersError("output directory is not empty", where=str(out),
                           fix="choose a new directory (nothing is overwritten)")
    model = model if model is not None else load_model(source)
    masker = masker_spec.build()
    if getattr(masker_spec, "perturbs", "weights") != "weights":
        raise MastersError(f"masker {masker_spec.name!r} changes the teacher's logits, not its weights: there is no "
                           "masked checkpoint to export", where="masker",
                           fix="use the hf generation backend, which applies it in the forward pass")
    if getattr(masker, "needs_calibration", False):
        raise MastersError(f"masker {masker_spec.name!r} needs calibration inputs, which export does not run",
                           where="masker", fix="use the Python API with collect_input_norms, or a magnitude masker")
    spec = masker_spec.model_copy(update={"memory": "stored"})  # export writes the masked weights themselves
    teacher = MaskedTeacher.from_model(model, masker, [level], maskable=maskable, memory=spec.memory)
    teacher.set_level(level)
    report = teacher.report()
    data = report.to_dict()
    data["source"] = str(source)
    data["masker_spec"] = masker_spec.model_dump(mode="json")
    # One atomic directory (decision 18): ``out`` appears only complete, weights, tokenizer files and
    # report together; a killed export leaves only a temporary of masters' own name beside it.
    _clean_killed_exports(out)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        for item in source.iterdir():  # tokenizer, processor and chat template travel with the weights
            if item.is_file() and not item.name.endswith(WEIGHT_SUFFIXES) and not (tmp / item.name).exists():
                if item.name.endswith(".index.json") or item.name == "config.json":
                    continue
                shutil.copy2(item, tmp / item.name)
        (tmp / REPORT_NAME).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    teacher.close()
    return report


def _clean_killed_exports(out: Path) -> None:
    """Remove what killed exports of ``out`` left beside it: only ``.<out>.masters-tmp.<pid>.*`` of
    processes that are gone (:func:`masters.files.own_temporary`), nothing else in the parent."""
    if not out.parent.is_dir():
        return
    for path in out.parent.glob(f".{glob_escape(out.name)}.masters-tmp.*"):
        if own_temporary(path) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
