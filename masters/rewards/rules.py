"""Rule-based accuracy rewards: exact match, multiple choice, numeric, regex (no torch).

Each is built with ``spec.build()`` and satisfies :class:`masters.interfaces.AccuracyReward`:
``score(items)`` gives 1.0 or 0.0 per :class:`~masters.interfaces.ScoredResponse`. Rules never
return ``None`` (that means "retry later", which only a judge that could not be reached needs).
The normalisation is in :mod:`masters.rewards.normalize`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from typing import Any

from masters.interfaces import ScoredResponse
from masters.rewards.normalize import Number, extract_final_answer, extract_numbers, normalize_answer, prepare

__all__ = ["RuleReward", "ExactMatchReward", "MultipleChoiceReward", "NumericReward", "RegexReward", "choice_index"]


class RuleReward:
    """Base: ``score`` maps :meth:`score_one` over the items."""

    def __init__(self, spec: Any, **_context: Any) -> None:
        self.spec = spec

    def score(self, items: Sequence[ScoredResponse]) -> list[float | None]:
        return [self.score_one(item) for item in items]

    def score_one(self, item: ScoredResponse) -> float:
        raise NotImplementedError


class ExactMatchReward(RuleReward):
    """1 when the (final answer of the) response equals the reference after normalisation."""

    def _norm(self, text: str) -> str:
        return normalize_answer(
            text,
            case_sensitive=self.spec.case_sensitive,
            strip_punctuation=self.spec.strip_punctuation,
            numbers_as_words=self.spec.numbers_as_words,
        )

    def score_one(self, item: ScoredResponse) -> float:
        reference = self._norm(item.reference)
        candidates = [item.response]
        if self.spec.extract_answer:
            candidates.insert(0, extract_final_answer(item.response))
        return float(any(self._norm(c) == reference for c in candidates))


# --- multiple choice -----------------------------------------------------------------------

_LETTER_ALONE = re.compile(r"^[(\[]?\s*([A-Za-z])\s*[)\].:]?$")
_LETTER_LEADS = re.compile(r"^[(\[]?([A-Za-z])(?:[)\]:]|\.(?=\s))\s*\S")
_LETTER_NAMED = re.compile(r"\b(?:option|choice|letter)\s*[(\[]?([A-Za-z])(?![\w])", re.I)
_LETTER_PAREN = re.compile(r"\(([A-Z])\)")


def _letter(text: str, n_choices: int, *, strict: bool = False) -> int | None:
    """Option index of a letter answer: 'B', '(b)', 'B.', '[B]', 'B) red', 'option B', '... (B) ...'."""
    text = text.strip()
    patterns = [_LETTER_ALONE] if strict else [_LETTER_ALONE, _LETTER_LEADS]
    for pattern in patterns:
        m = pattern.match(text)
        if m:
            index = ord(m.group(1).upper()) - ord("A")
            return index if index < n_choices else None
    if strict:
        return None
    for pattern in (_LETTER_NAMED, _LETTER_PAREN):
        letters = {m.group(1).upper() for m in pattern.finditer(text)}
        if len(letters) == 1:  # several different letters: no single answer
            index = ord(letters.pop()) - ord("A")
            return index if index < n_choices else None
    return None


def _option_text(text: str, choices: Sequence[str]) -> int | None:
    """Index of the option the text states: equal to one, else the one option it contains
    (an option contained in another contained option, like 'circle' in 'red circle', yields)."""
    norm = normalize_answer(text)
    options = [normalize_answer(c) for c in choices]
    equal = [i for i, o in enumerate(options) if o and o == norm]
    if len(set(options[i] for i in equal)) == 1:
        return equal[0]
    padded = f" {norm} "
    inside = [i for i, o in enumerate(options) if o and f" {o} " in padded]
    maximal = [i for i in inside if not any(j != i and options[i] != options[j] and f" {options[i]} " in f" {options[j]} " for j in inside)]
    if len(maximal) == 1:
        return maximal[0]
    return None


def choice_index(text: str, choices: Sequence[str] | None, *, reference: bool = False) -> int | None:
    """Which option ``text`` picks (0-based), or None. A reference must be a bare letter or an
    option's text; a response may also say 'Answer: (B)', 'B. red circle', 'option b'..."""
    n = len(choices) if choices else 26
    candidates = [text] if reference else list(dict.fromkeys([extract_final_answer(text), prepare(text)]))
    for candidate in candidates:
        index = _letter(candidate, n, strict=reference)
        if index is None and choices:
            index = _option_text(candidate, choices)
        if index is not None:
            return index
    return None


class MultipleChoiceReward(RuleReward):
    """1 when the response picks the reference option, by letter or by the option's text.

    Without ``choices`` only letters count. When the reference is not a letter and matches no
    option, the normalised texts are compared (as exact match would).
    """

    def score_one(self, item: ScoredResponse) -> float:
        choices = list(item.choices) if item.choices else None
        ref = choice_index(item.reference, choices, reference=True)
        if ref is None:
            return float(normalize_answer(extract_final_answer(item.response)) == normalize_answer(item.reference))
        return float(choice_index(item.response, choices) == ref)


# --- numeric -------------------------------------------------------------------------------


class NumericReward(RuleReward):
    """1 when the response's number is within tolerance of the reference's first number.

    The response's number is taken from its marked final answer when it has one (``<answer>``,
    ``\\boxed{}``, 'answer is'), else the ``position`` ('last' by default) number of the response.
    A '%' on one side only also accepts the value divided by 100 ('50%' == 0.5). A reference
    without a number scores 0.
    """

    def score_one(self, item: ScoredResponse) -> float:
        ref_numbers = extract_numbers(item.reference)
        if not ref_numbers:
            return 0.0
        final = extract_final_answer(item.response)
        numbers = extract_numbers(final) if final != item.response.strip() else []
        if numbers:
            found = numbers[0]
        else:
            numbers = extract_numbers(item.response)
            if not numbers:
                return 0.0
            found = numbers[-1] if self.spec.position == "last" else numbers[0]
        return float(self._close(found, ref_numbers[0]))

    def _close(self, got: Number, want: Number) -> bool:
        pairs = [(got.value, want.value)]
        if got.percent != want.percent:
            pairs.append((got.value / 100, want.value) if got.percent else (got.value, want.value / 100))
        return any(math.isclose(a, b, rel_tol=self.spec.rel_tol, abs_tol=self.spec.abs_tol) for a, b in pairs)


# --- regex ---------------------------------------------------------------------------------


class RegexReward(RuleReward):
    """1 when the response matches ``spec.pattern`` with ``{reference}`` replaced by the escaped,
    trimmed reference (searched anywhere, or the whole trimmed response with ``full_match``)."""

    def __init__(self, spec: Any, **context: Any) -> None:
        super().__init__(spec, **context)
        self._compile = functools.lru_cache(maxsize=4096)(self._compile_uncached)

    def _compile_uncached(self, reference: str) -> re.Pattern[str]:
        flags = re.IGNORECASE if self.spec.ignore_case else 0
        # str.replace, not str.format: patterns contain other braces ('\d{2}').
        return re.compile(self.spec.pattern.replace("{reference}", re.escape(reference)), flags)

    def score_one(self, item: ScoredResponse) -> float:
        pattern = self._compile(prepare(item.reference))
        response = prepare(item.response)
        match = pattern.fullmatch(response) if self.spec.full_match else pattern.search(response)
        return float(match is not None)
