"""The synthetic shapes VQA task: procedural images, short closed answers, deterministic by seed.

Built so that a tiny model can learn it on CPU in a minute or two: 32 px images, at most four
shapes placed in distinct quadrants (no occlusion), distinct colours within an image (so "the red
shape" is unique), one-word answers from a vocabulary of a few dozen words.

Splits share no (image, question) pair by construction: every candidate item is assigned to a split
by a hash of its key (scene + question), so an item can only ever land in one split, and the test
set does not change when ``n_train`` does.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from masters.data.types import VQASample

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "big")
QUADRANTS: tuple[tuple[str, str], ...] = (("top", "left"), ("top", "right"), ("bottom", "left"), ("bottom", "right"))
COUNT_WORDS: tuple[str, ...] = ("1", "2", "3", "4")
QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "count", "size", "position", "exists")
LETTERS = "ABCD"
SPLITS: tuple[str, ...] = ("train", "validation", "test")
# Share of the candidate stream that belongs to each split; fixed so each split is independent of
# the others' sizes.
_SPLIT_WEIGHTS = {"train": 0.6, "validation": 0.15, "test": 0.25}
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Shape:
    shape: str
    color: str
    size: str
    quadrant: int  # index into QUADRANTS
    dx: int  # jitter of the centre within the quadrant, in pixels
    dy: int

    @property
    def vertical(self) -> str:
        return QUADRANTS[self.quadrant][0]

    @property
    def horizontal(self) -> str:
        return QUADRANTS[self.quadrant][1]


def random_scene(rng: random.Random, max_shapes: int) -> tuple[Shape, ...]:
    n = rng.randint(1, max_shapes)
    colors = rng.sample(list(COLORS), n)
    quadrants = sorted(rng.sample(range(len(QUADRANTS)), n))
    return tuple(
        Shape(rng.choice(SHAPES), color, rng.choice(SIZES), q, rng.randint(-1, 1), rng.randint(-1, 1))
        for color, q in zip(colors, quadrants)
    )


def render(scene: Sequence[Shape], image_size: int):
    """Draw a scene on a white square image of ``image_size`` pixels."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell = image_size / 2
    for s in scene:
        row, col = divmod(s.quadrant, 2)
        cx, cy = (col + 0.5) * cell + s.dx, (row + 0.5) * cell + s.dy
        r = cell * (0.42 if s.size == "big" else 0.22)
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = COLORS[s.color]
        if s.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif s.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return image


def _question(scene: Sequence[Shape], kind: str, rng: random.Random) -> tuple[str, str, tuple[str, ...]] | None:
    """(question, answer, answer domain) for one question kind, or None when it is ambiguous here."""
    target = rng.choice(scene)
    if kind == "color":
        unique = [s for s in scene if sum(t.shape == s.shape for t in scene) == 1]
        if not unique:
            return None
        s = rng.choice(unique)
        return f"what color is the {s.shape} ?", s.color, tuple(COLORS)
    if kind == "shape":
        return f"what shape is the {target.color} one ?", target.shape, SHAPES
    if kind == "count":
        return "how many shapes are there ?", COUNT_WORDS[len(scene) - 1], COUNT_WORDS
    if kind == "size":
        return f"is the {target.color} {target.shape} big or small ?", target.size, SIZES
    if kind == "position":
        if rng.random() < 0.5:
            return f"is the {target.color} {target.shape} on the left or right ?", target.horizontal, ("left", "right")
        return f"is the {target.color} {target.shape} at the top or bottom ?", target.vertical, ("top", "bottom")
    if kind == "exists":
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        present = any(s.color == color and s.shape == shape for s in scene)
        if not present and rng.random() < 0.5:  # balance yes and no
            color, shape = target.color, target.shape
            present = True
        return f"is there a {color} {shape} ?", "yes" if present else "no", ("yes", "no")
    raise ValueError(f"unknown shapes question type {kind!r}; known: {', '.join(QUESTION_TYPES)}")


def _multiple_choice(question: str, answer: str, domain: Sequence[str], rng: random.Random):
    options = [answer, *rng.sample([d for d in domain if d != answer], min(3, len(domain) - 1))]
    rng.shuffle(options)
    listed = " ".join(f"{LETTERS[i]} . {o}" for i, o in enumerate(options))
    text = f"{question} options : {listed} . answer with the letter ."
    return text, LETTERS[options.index(answer)], tuple(options)


def deal_into_splits(keyed: Iterable[tuple[str, Any]], wanted: Mapping[str, int], seed: int, *, what: str
                     ) -> Iterator[tuple[str, int, Any]]:
    """Deal distinct ``(key, item)`` pairs into splits by a hash of the key (so a key's split never
    depends on what else was drawn) until each split holds its wanted count; yields
    ``(split, index within the split, item)``. Duplicate keys are skipped."""
    counts = dict.fromkeys(SPLITS, 0)
    seen: set[str] = set()
    budget = 200 * (sum(wanted.values()) + 10)  # the key space is large; this only guards a bug
    for key, item in keyed:
        if all(counts[s] >= wanted[s] for s in SPLITS):
            return
        budget -= 1
        if budget < 0:
            raise RuntimeError(f"{what}: could not draw enough distinct items")
        if key in seen:
            continue
        seen.add(key)
        split = _split_of(key, seed)
        if counts[split] >= wanted[split]:
            continue
        yield split, counts[split], item
        counts[split] += 1


def _split_of(key: str, seed: int) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}|{key}".encode()).digest()[:8], "big") / 2**64
    acc = 0.0
    for split in SPLITS:
        acc += _SPLIT_WEIGHTS[split]
        if h < acc:
            return split
    return SPLITS[-1]


def _candidates(seed: int, max_shapes: int, question_types: Sequence[str], forms: Sequence[str]) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    while True:
        scene = random_scene(rng, max_shapes)
        kind = rng.choice(list(question_types))
        made = _question(scene, kind, rng)
        if made is None:
            continue
        question, answer, domain = made
        form = rng.choice(list(forms))
        choices = None
        answer_text = answer
        if form == "multiple_choice":
            question, answer, choices = _multiple_choice(question, answer, domain, rng)
        yield {"scene": scene, "question": question, "answer": answer, "choices": choices,
               "kind": kind, "form": form, "answer_text": answer_text}


def generate_shapes(
    n_train: int = 512,
    n_validation: int = 128,
    n_test: int = 256,
    *,
    image_size: int = 32,
    seed: int = 0,
    forms: Sequence[str] = ("open", "multiple_choice"),
    question_types: Sequence[str] = QUESTION_TYPES,
    max_shapes: int = 3,
) -> dict[str, list[VQASample]]:
    """The shapes task's splits; the same arguments always give the same samples, ids and pixels."""
    if not 1 <= max_shapes <= len(QUADRANTS):
        raise ValueError(f"max_shapes must be in 1..{len(QUADRANTS)}, got {max_shapes}")
    wanted = {"train": n_train, "validation": n_validation, "test": n_test}
    out: dict[str, list[VQASample]] = {split: [] for split in SPLITS}
    def keyed() -> Iterator[tuple[str, dict[str, Any]]]:
        for item in _candidates(seed, max_shapes, question_types, forms):
            scene_key = json.dumps([[s.shape, s.color, s.size, s.quadrant, s.dx, s.dy] for s in item["scene"]])
            yield f"{scene_key}|{item['question']}", {**item, "scene_key": scene_key}

    for split, index, item in deal_into_splits(keyed(), wanted, seed, what="shapes task (raise max_shapes?)"):
        out[split].append(
            VQASample(
                id=f"shapes-{seed}-{split}-{index:06d}",
                images=(render(item["scene"], image_size),),
                question=item["question"],
                answer=item["answer"],
                choices=item["choices"],
                metadata={
                    "kind": item["kind"],
                    "form": item["form"],
                    "answer_text": item["answer_text"],
                    "scene": json.loads(item["scene_key"]),
                },
            )
        )
    return out


def shapes_vocabulary() -> list[str]:
    """Every word the task's questions and answers can contain (what tiny tokenizers are trained on)."""
    words = set(COLORS) | set(SHAPES) | set(SIZES) | set(COUNT_WORDS) | set(LETTERS) | {"yes", "no"}
    words |= {w for pair in QUADRANTS for w in pair}
    templates = [
        "what color is the ?", "what shape is the one ?", "how many shapes are there ?",
        "is the big or small ?", "is the on the left or right ?", "is the at the top or bottom ?",
        "is there a ?", "options : . answer with the letter .",
    ]
    for t in templates:
        words |= set(t.split())
    return sorted(words)
