"""The LLM judge's prompts and the parsers of its verdicts (torch-free, no I/O).

The chain follows the paper (method.md section 5): a judging prompt asks for a short justification
and then a score of 0 or 1 inside ``<answer></answer>``; when that verdict is unclear (no single
0/1 there), a parsing prompt shows the judge its own output and asks for a bare 0 or 1.

Templates name their slots in braces. Only the known slots below are replaced, so a template may
hold other braces (JSON examples, LaTeX) and a response full of braces is inserted as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "DEFAULT_JUDGE_PROMPT",
    "DEFAULT_PARSE_PROMPT",
    "JUDGE_SLOTS",
    "PARSE_SLOTS",
    "format_choices",
    "parse_bare_verdict",
    "parse_tagged_verdict",
    "render",
    "template_problems",
]

DEFAULT_JUDGE_PROMPT = """\
You are grading a response to a question about an image. You cannot see the image: judge only \
whether the response gives the same final answer as the reference answer. Ignore wording, \
formatting and extra explanation; a response that gives several different answers is wrong.

Question: {question}{choices}
Reference answer: {reference}
Response: {response}

First explain your judgement in one or two short sentences. Then give the score inside \
<answer></answer>: <answer>1</answer> if the response's final answer matches the reference \
answer, <answer>0</answer> if it does not."""

DEFAULT_PARSE_PROMPT = """\
Below is a grader's judgement of whether a response matches a reference answer.

Judgement:
{judgment}

Did the grader judge the response correct? Reply with a single digit and nothing else: 1 if \
correct, 0 if incorrect."""

JUDGE_SLOTS: tuple[str, ...] = ("question", "reference", "response", "choices")
"""Slots of the judging prompt; ``{choices}`` is empty, or a newline then the lettered options."""
PARSE_SLOTS: tuple[str, ...] = ("judgment", "question", "reference", "response", "choices")
"""Slots of the parsing prompt; ``{judgment}`` is the judge's first output."""
REQUIRED_SLOTS: dict[str, tuple[str, ...]] = {"judge": ("reference", "response"), "parse": ("judgment",)}

_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template_problems(template: str, which: str) -> list[str]:
    """Why a template cannot be used (empty when it can): a missing required slot."""
    slots = {m.group(1) for m in _SLOT.finditer(template)}
    missing = [s for s in REQUIRED_SLOTS[which] if s not in slots]
    return [f"the template has no {{{s}}} slot" for s in missing]


def render(template: str, **values: str) -> str:
    """Replace the ``{slot}`` markers named in ``values``; every other brace stays as written."""
    return _SLOT.sub(lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), template)


def format_choices(choices: Sequence[str] | None) -> str:
    """The options as the judge sees them: empty without options, else ``\\nOptions: A. x; B. y``."""
    if not choices:
        return ""
    letters = [chr(ord("A") + i) if i < 26 else str(i + 1) for i in range(len(choices))]
    return "\nOptions: " + "; ".join(f"{letter}. {text}" for letter, text in zip(letters, choices))


_TAG = re.compile(r"<answer>(.*?)</answer>", re.I | re.S)
# A score alone, allowing markdown emphasis, quotes and a trailing full stop: "1", "**0**", "1.0", "'1'."
_BARE = re.compile(r"^[\s*_`'\"(\[]*([01])(?:\.0+)?[\s*_`'\")\].]*$")
_TOKEN = re.compile(r"(?<![\w.])([01])(?![\w]|\.\d)")


def parse_tagged_verdict(text: str) -> int | None:
    """The score in ``<answer>..</answer>``: 0 or 1, or None when unclear.

    Unclear means no tag, a tag holding anything but a bare 0 or 1, or several tags that disagree.
    """
    found = {_bare(m.group(1)) for m in _TAG.finditer(text)}
    if len(found) != 1:
        return None
    return found.pop()


def parse_bare_verdict(text: str) -> int | None:
    """The parsing prompt's answer: a clear tag, else a bare 0/1, else the only 0/1 token it holds."""
    tagged = parse_tagged_verdict(text)
    if tagged is not None:
        return tagged
    bare = _bare(text)
    if bare is not None:
        return bare
    tokens = {int(m.group(1)) for m in _TOKEN.finditer(_TAG.sub(" ", text))}
    return tokens.pop() if len(tokens) == 1 else None


def _bare(text: str) -> int | None:
    m = _BARE.match(text.strip())
    return int(m.group(1)) if m else None
