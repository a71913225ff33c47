"""Answer normalisation shared by the rule-based rewards (pure Python, no torch).

Everything here is deterministic and applied the same way to the response and the reference, so
that a rule reward never depends on which side a formatting quirk is on.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

__all__ = [
    "prepare",
    "extract_final_answer",
    "words_to_numbers",
    "canonical_number",
    "normalize_answer",
    "Number",
    "extract_numbers",
]

# Characters NFKC leaves alone but that mean the ASCII ones in answers.
_TRANSLATE = str.maketrans({"\u2212": "-", "\u2010": "-", "\u2011": "-", "\u00a0": " ", "\u200b": ""})


def prepare(text: str) -> str:
    """NFKC (full-width digits, ligatures), Unicode minus to '-', trimmed."""
    return unicodedata.normalize("NFKC", text).translate(_TRANSLATE).strip()


# --- the final answer of a longer response -------------------------------------------------

_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_MARKER_RE = re.compile(r"\b(?:final\s+answer|answer)\s*(?:is\s*:?|:|=)\s*", re.I)
# The marked answer ends at a line break, at sentence punctuation followed by a space or the end
# (not the '.' of '3.5'), at ', ' or at ' because'.
_MARKED_END_RE = re.compile(r"\n|[.;!?](?=\s|$)|,\s|\s+because\b", re.I)


def _boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract_final_answer(text: str) -> str:
    """The part of a response that states its answer, else the whole response.

    In order: the last ``<answer>...</answer>``, the last ``\\boxed{...}``, the text after the last
    ``answer:`` / ``answer is`` / ``final answer =`` up to the end of that sentence.
    """
    tags = _TAG_RE.findall(text)
    if tags:
        return tags[-1].strip()
    boxed = _boxed(text)
    if boxed is not None:
        return boxed.strip()
    markers = list(_MARKER_RE.finditer(text))
    if markers:
        rest = text[markers[-1].end():]
        end = _MARKED_END_RE.search(rest)
        answer = (rest[: end.start()] if end else rest).strip()
        if answer:
            return answer
    return text.strip()


# --- numbers written as words --------------------------------------------------------------

_SMALL = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9}
_NUMBER_WORDS = [*_SMALL, *_TENS, "hundred", *_SCALES]
_WORD = "(?:" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + ")"
# A run of number words: 'twenty-one', 'one hundred and five', 'a thousand'.
_RUN_RE = re.compile(
    rf"\b(?:an?[\s-]+(?=(?:hundred|thousand|million|billion)\b))?{_WORD}(?:(?:[\s-]+(?:and[\s-]+)?){_WORD})*\b",
    re.I,
)


_SCALED_DIGITS_RE = re.compile(r"(?<![\w.,])(\d+(?:\.\d+)?)\s+(thousand|million|billion)\b", re.I)


def _parse_run(words: list[str]) -> int | None:
    """Value of a well-formed English cardinal, or None ('one two' is two numbers, not three)."""
    total, group, prev, last_scale = 0, 0, None, math.inf
    for w in words:
        if w == "and":
            if prev not in ("hundred", "scale"):
                return None
            continue
        if w in ("a", "an"):
            if prev is not None:
                return None
            group, prev = 1, "a"
        elif w in _SMALL:
            value = _SMALL[w]
            if prev in (None, "hundred", "scale") and not (value == 0 and prev is not None):
                group += value
            elif prev == "ten" and 1 <= value <= 9:
                group += value
            else:
                return None
            prev = "unit"
        elif w in _TENS:
            if prev not in (None, "hundred", "scale"):
                return None
            group, prev = group + _TENS[w], "ten"
        elif w == "hundred":
            if prev not in ("unit", "a") or not 1 <= group <= 9:
                return None
            group, prev = group * 100, "hundred"
        else:  # thousand, million, billion: strictly decreasing
            scale = _SCALES[w]
            if prev not in ("unit", "ten", "hundred", "a") or group == 0 or scale >= last_scale:
                return None
            total, group, prev, last_scale = total + group * scale, 0, "scale", scale
    if prev == "a":
        return None
    return total + group


def words_to_numbers(text: str) -> str:
    """Replace cardinal number words by digits: 'twenty-one' -> '21', 'a hundred' -> '100'.

    A run that is not one well-formed number ('one two') has each word replaced on its own.
    """

    def replace(match: re.Match[str]) -> str:
        words = [w for w in re.split(r"[\s-]+", match.group(0).lower()) if w]
        value = _parse_run(words)
        if value is not None:
            return str(value)
        return " ".join(str(_SMALL.get(w, _TENS.get(w, w))) for w in words)

    text = _RUN_RE.sub(replace, text)
    # '2.5 million' -> '2500000' (digits followed by a scale word).
    return _SCALED_DIGITS_RE.sub(lambda m: canonical_number(str(Decimal(m[1]) * _SCALES[m[2].lower()])), text)


# --- digits --------------------------------------------------------------------------------

_NUMBER_TOKEN = r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"


def canonical_number(token: str) -> str:
    """'1,000.50' -> '1000.5', '+3' -> '3', '-0.0' -> '0', '.5' -> '0.5'."""
    try:
        value = Decimal(token.replace(",", ""))
    except InvalidOperation:
        return token
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


# --- exact-match normalisation -------------------------------------------------------------

_TOKEN_RE = re.compile(rf"(?P<num>{_NUMBER_TOKEN})|(?P<word>\w+)|(?P<punct>[^\w\s])")
_ARTICLES = frozenset({"a", "an", "the"})


def normalize_answer(
    text: str,
    *,
    case_sensitive: bool = False,
    strip_punctuation: bool = True,
    numbers_as_words: bool = True,
) -> str:
    """Canonical form for exact comparison.

    Unicode NFKC; case folded unless ``case_sensitive``; number words to digits; numbers
    canonical ('3.50' == '3.5', '1,000' == '1000'); punctuation and the articles a/an/the dropped
    when ``strip_punctuation`` (articles only if something else remains: the answer 'A' stays);
    whitespace collapsed.
    """
    text = prepare(text)
    if not case_sensitive:
        text = text.casefold()
    if numbers_as_words:
        text = words_to_numbers(text)
    tokens = []
    for match in _TOKEN_RE.finditer(text):
        if match.lastgroup == "num":
            tokens.append(canonical_number(match.group()))
        elif match.lastgroup == "word":
            tokens.append(match.group())
        elif not strip_punctuation:
            tokens.append(match.group())
    if strip_punctuation:
        kept = [t for t in tokens if t.casefold() not in _ARTICLES]
        tokens = kept or tokens
    return " ".join(tokens)


# --- numbers for the numeric reward --------------------------------------------------------

_NUMERIC_RE = re.compile(
    rf"(?P<num>{_NUMBER_TOKEN})(?:[eE](?P<exp>[-+]?\d+))?"
    r"(?:\s*/\s*(?P<den>\d+(?:\.\d+)?)(?![\d.]))?(?P<pct>\s*%)?"
)


_FRAC_RE = re.compile(r"\\[dt]?frac\{\s*([-+]?[\d.]+)\s*\}\{\s*([\d.]+)\s*\}")


@dataclass(frozen=True)
class Number:
    """A number found in text; ``percent`` when written with '%' (50% may mean 50 or 0.5)."""

    value: float
    percent: bool = False
    text: str = ""


def extract_numbers(text: str) -> list[Number]:
    """Every number in ``text`` in order: negatives, decimals, thousands commas, '1e-3', '3/4',
    '50%', and number words ('three' -> 3)."""
    text = words_to_numbers(_FRAC_RE.sub(r"\1/\2", prepare(text)))
    found = []
    for m in _NUMERIC_RE.finditer(text):
        value = float(m.group("num").replace(",", ""))
        if m.group("exp"):
            value *= 10.0 ** int(m.group("exp"))
        if m.group("den") and float(m.group("den")) != 0:
            value /= float(m.group("den"))
        if math.isfinite(value):
            found.append(Number(value, percent=bool(m.group("pct")), text=m.group().strip()))
    return found
