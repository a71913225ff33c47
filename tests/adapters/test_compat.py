"""Teacher/student compatibility is decided on token-to-id maps, not vocab_size."""

from __future__ import annotations

import pytest
import torch

from masters.adapters import check_compatible, resolve_adapter
from masters.errors import IncompatibleModelsError


def test_sizes_share_a_tokenizer_but_not_embedding_rows(tiny_dirs, shapes_samples):
    teacher, student = resolve_adapter(tiny_dirs("qwen2_vl", "small")), resolve_adapter(tiny_dirs("qwen2_vl"))
    rows_t = teacher.model.get_output_embeddings().weight.shape[0]
    rows_s = student.model.get_output_embeddings().weight.shape[0]
    assert rows_t != rows_s  # padded differently on purpose
    shared = check_compatible(teacher, student)
    assert shared == len(teacher.vocab()) <= min(rows_t, rows_s)
    # Aligned by response-token index: same response through both gives matching shapes.
    resp = teacher.response_ids([s.answer for s in shapes_samples[:2]])
    with torch.no_grad():
        t = teacher.teacher_force(shapes_samples[:2], resp, vocab_limit=shared)
        s = student.teacher_force(shapes_samples[:2], resp, vocab_limit=shared)
    assert t.logits.shape == s.logits.shape and torch.equal(t.mask, s.mask)


def test_different_token_maps_are_rejected(tiny_dirs):
    teacher = resolve_adapter(tiny_dirs("llava"))
    student = resolve_adapter(tiny_dirs("llava"))
    student.tokenizer.add_tokens(["zebra"])
    with pytest.raises(IncompatibleModelsError, match="only in the student's"):
        check_compatible(teacher, student)


def test_different_eos_is_rejected(tiny_dirs):
    teacher, student = resolve_adapter(tiny_dirs("llava")), resolve_adapter(tiny_dirs("qwen2_vl"))
    with pytest.raises(IncompatibleModelsError, match="EOS"):
        check_compatible(teacher, student)


def test_swapped_ids_are_rejected():
    class Tok:
        def __init__(self, vocab):
            self.vocab_map, self.eos_token = vocab, "b"

        def get_vocab(self):
            return self.vocab_map

    with pytest.raises(IncompatibleModelsError, match="different ids"):
        check_compatible(Tok({"a": 0, "b": 1}), Tok({"a": 1, "b": 0}))
