"""The ``semantic_similarity`` reward; imported only when a run builds it (this is where torch loads).

Satisfies :class:`masters.interfaces.AccuracyReward`: one score in [0, 1] per banked response.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from masters.api import MastersError
from masters.api import ScoredResponse

from masters_semantic_reward.encoder import WHERE, SentenceEncoder, bundled_model_path, load_encoder, resolve_device
from masters_semantic_reward.spec import SemanticSimilarityRewardSpec


class SemanticSimilarityReward:
    def __init__(self, spec: SemanticSimilarityRewardSpec, **context: object) -> None:
        self.spec = spec
        if spec.model_path is not None and not Path(spec.model_path, "config.json").is_file():
            raise MastersError(
                f"{spec.model_path} is not a model directory (no config.json)",
                where=f"{WHERE}.model_path",
                fix="point model_path at a local sentence-transformers folder, or remove it to use the bundled encoder",
            )
        self._encoder: SentenceEncoder | None = None

    @property
    def encoder(self) -> SentenceEncoder:
        """Loaded on first use, then shared by every reward built with the same model and device."""
        if self._encoder is None:
            path = Path(self.spec.model_path) if self.spec.model_path else bundled_model_path()
            self._encoder = load_encoder(str(path.resolve()), resolve_device(self.spec.device))
        return self._encoder

    def similarities(self, items: Sequence[ScoredResponse]) -> list[float | None]:
        """Cosine similarity of each response to its reference; None where either text is empty."""
        texts: dict[str, int] = {}  # each distinct text is encoded once (references repeat per question)
        pairs: list[tuple[int, int] | None] = []
        for item in items:
            response, reference = item.response.strip(), item.reference.strip()
            if not reference or not response:
                pairs.append(None)
                continue
            pairs.append((texts.setdefault(response, len(texts)), texts.setdefault(reference, len(texts))))
        result: list[float | None] = [None] * len(items)
        if texts:
            emb = self.encoder.encode(list(texts), batch_size=self.spec.batch_size, max_tokens=self.spec.max_tokens)
            for i, pair in enumerate(pairs):
                if pair is not None:
                    result[i] = float((emb[pair[0]] @ emb[pair[1]]).clamp(-1.0, 1.0))
        return result

    def score(self, items: Sequence[ScoredResponse]) -> list[float | None]:
        spec = self.spec
        scores: list[float | None] = []
        for item, sim in zip(items, self.similarities(items)):
            if not item.reference.strip():
                scores.append(None)  # nothing to compare with: leave the row unscored
            elif sim is None:
                scores.append(0.0)  # an empty response is wrong, not unscorable
            elif spec.mode == "threshold":
                scores.append(1.0 if sim >= spec.threshold else 0.0)
            else:
                scores.append(min(1.0, max(0.0, (sim - spec.floor) / (1.0 - spec.floor))))
        return scores
