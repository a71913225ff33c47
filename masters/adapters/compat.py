"""Can a teacher and a student be distilled together? (design decision 12)

They must share a tokenizer: the same token-to-id map, compared entry by entry. ``vocab_size`` is
not compared, because families pad the embedding matrix to different row counts; instead the
shared vocabulary length is returned, and every divergence cuts logits to it first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from masters.errors import IncompatibleModelsError


def _vocab(model: Any) -> Mapping[str, int]:
    if hasattr(model, "vocab"):
        return model.vocab()
    return (getattr(model, "tokenizer", None) or model).get_vocab()


def _eos(model: Any) -> str | None:
    tok = getattr(model, "tokenizer", None) or model
    return getattr(tok, "eos_token", None)


def _logit_rows(model: Any) -> int | None:
    """The LM head's output rows, from the module's declared ``out_features`` (or the text config's
    ``vocab_size``), never from the weight's shape: a sharded student (FSDP1 flat parameters, ZeRO-3
    partitions) holds a weight of 0 rows."""
    inner = getattr(model, "model", None)
    emb = inner.get_output_embeddings() if inner is not None and hasattr(inner, "get_output_embeddings") else None
    if emb is None:
        return None
    rows = getattr(emb, "out_features", None) or getattr(emb, "num_embeddings", None)
    if rows is None:
        config = getattr(inner, "config", None)
        text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
        rows = getattr(text, "vocab_size", None)
    if rows is None:
        shape = getattr(emb.weight, "ds_shape", None) or emb.weight.shape
        rows = shape[0]
    return int(rows)


def check_compatible(teacher: Any, student: Any, *, where: str = "teacher/student") -> int:
    """Raise :class:`IncompatibleModelsError` unless the two share a tokenizer; return the shared
    vocabulary length (cut logits with ``logits[..., :n]`` before any divergence).

    ``teacher`` and ``student`` are adapters (anything with ``vocab()`` or a ``tokenizer``) or
    tokenizers.
    """
    t_vocab, s_vocab = _vocab(teacher), _vocab(student)
    if t_vocab != s_vocab:
        only_t = sorted(set(t_vocab) - set(s_vocab))
        only_s = sorted(set(s_vocab) - set(t_vocab))
        moved = sorted(k for k in set(t_vocab) & set(s_vocab) if t_vocab[k] != s_vocab[k])
        details = []
        if moved:
            k = moved[0]
            details.append(f"{len(moved)} token(s) have different ids (e.g. {k!r}: {t_vocab[k]} vs {s_vocab[k]})")
        if only_t:
            details.append(f"{len(only_t)} only in the teacher's (e.g. {only_t[0]!r})")
        if only_s:
            details.append(f"{len(only_s)} only in the student's (e.g. {only_s[0]!r})")
        raise IncompatibleModelsError(
            "teacher and student tokenizers differ: " + "; ".join(details),
            where=where,
            fix="distil within one model family: teacher and student must share a tokenizer (same token-to-id map)",
        )
    if _eos(teacher) != _eos(student):
        raise IncompatibleModelsError(
            f"teacher and student end responses with different EOS tokens ({_eos(teacher)!r} vs {_eos(student)!r})",
            where=where,
            fix="use checkpoints with the same chat format, or save the student's tokenizer with the teacher's EOS",
        )
    shared = max(t_vocab.values()) + 1 if t_vocab else 0
    for role, model in (("teacher", teacher), ("student", student)):
        rows = _logit_rows(model)
        if rows is not None and rows < shared:
            raise IncompatibleModelsError(
                f"the {role}'s LM head has {rows} rows but its tokenizer has {shared} ids",
                where=where,
                fix=f"resize the {role}'s token embeddings to the tokenizer (resize_token_embeddings)",
            )
    return shared


def shared_vocab_size(teacher: Any, student: Any) -> int:
    """The number of logit columns teacher and student have in common (after checking them)."""
    return check_compatible(teacher, student)
