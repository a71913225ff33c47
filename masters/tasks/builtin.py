"""Implementations of the built-in tasks: each builds its splits from its spec."""

from __future__ import annotations

from typing import Any

from masters.data.types import VQASample


class ShapesTask:
    """The synthetic shapes VQA task (deterministic by seed)."""

    def __init__(self, spec: Any, **context: Any) -> None:
        self.spec = spec

    def splits(self) -> dict[str, list[VQASample]]:
        from masters.tasks.shapes import generate_shapes

        s = self.spec
        return generate_shapes(s.n_train, s.n_validation, s.n_test, image_size=s.image_size, seed=s.seed,
                               forms=s.forms, question_types=s.question_types, max_shapes=s.max_shapes)


class ShapesReasonTask:
    """Compositional shapes questions with trace answers (deterministic by seed)."""

    def __init__(self, spec: Any, **context: Any) -> None:
        self.spec = spec

    def splits(self) -> dict[str, list[VQASample]]:
        from masters.tasks.shapes_reason import generate_shapes_reason

        s = self.spec
        return generate_shapes_reason(s.n_train, s.n_validation, s.n_test, seed=s.seed,
                                      question_kinds=s.question_kinds, templates=s.templates)


class LlavaJsonTask:
    """LLaVA-style JSON conversations, split by a hash of the record id."""

    def __init__(self, spec: Any, **context: Any) -> None:
        self.spec = spec

    def splits(self) -> dict[str, list[VQASample]]:
        from masters.tasks.loaders import load_llava_json, split_by_id

        records = load_llava_json(self.spec.path, image_root=self.spec.image_root)
        return split_by_id(records, self.spec.validation_fraction, self.spec.test_fraction)


class HFDatasetsTask:
    """A ``datasets`` table on disk or Parquet files."""

    def __init__(self, spec: Any, **context: Any) -> None:
        self.spec = spec

    def splits(self) -> dict[str, list[VQASample]]:
        from masters.tasks.loaders import load_hf_dataset

        return load_hf_dataset(self.spec)
