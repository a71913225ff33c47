"""``shapes_reason``: compositional questions on 3x3 shape scenes, answered by a short trace.

The testbed of issue 13: a task on which a tiny teacher's distribution is *genuinely
multi-modal* and too rich for a smaller student.

* **Scenes**: 48 px images on a 3x3 grid of 16 px cells (one image token per cell with 16 px
  patches); 3 to 6 objects in distinct cells, each one of 6 colours x 4 shapes x 2 sizes.
  Attributes may repeat within a scene (two red circles), so questions need counting.
* **Questions** need 2-3 steps: filtered counts (``how many red shapes``), conjunctions
  (``how many big red shapes``), comparisons (``are there more circle shapes than square
  shapes``), differences (``how many more ...``) and relational attributes (``what color is the
  shape left of the red circle``).
* **Answers** are a short trace then ``answer : X``, 8 to 24 tokens of the word-level tokenizer.
  Every example draws one of :data:`TEMPLATES` (they differ in enumeration order, connectives
  and where the count goes), so the reference distribution has several modes by construction.

The trace grammar every template keeps (what :func:`faithfulness` parses, whatever the
template): sentences end with ``.``; the last one is ``... answer : X``; in a counting trace the
k-th sentence is about the k-th operand of the question; a run of attribute words (sizes,
colours, shapes) followed by ``shapes`` or ``:`` is a *label* (it names a filter); any other run
is a *mention* of an object; a digit in a sentence is that sentence's count. The scene and the
question's program are in each sample's metadata, so a trace is checked against the scene itself.
Deterministic by seed; splits are assigned by a hash of (scene, question), as in ``shapes``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from masters.data.types import VQASample
from masters.tasks.shapes import SPLITS, deal_into_splits

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (150, 50, 190),
    "orange": (245, 130, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: tuple[str, ...] = ("small", "big")
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
COLS: tuple[str, ...] = ("left", "center", "right")
GRID = 3
CELL = 16
IMAGE_SIZE = GRID * CELL
MIN_OBJECTS, MAX_OBJECTS = 3, 6
QUESTION_KINDS: tuple[str, ...] = ("count", "count_and", "compare", "difference", "relation")
# One-step perception questions (an attribute of the object in a named cell): not among the
# task's questions by default; the capacity models are warmed up on them first (a perception
# stage, as VLMs are aligned on captions before they are taught to reason), see
# masters.engine.capacity.
PERCEPTION_KINDS: tuple[str, ...] = ("cell",)
TEMPLATES: tuple[str, ...] = ("list", "count_first", "prose")
MIN_TOKENS, MAX_TOKENS = 8, 24
BACKGROUND = (255, 255, 255)
ATTRIBUTE = {**{c: "color" for c in COLORS}, **{s: "shape" for s in SHAPES}, **{z: "size" for z in SIZES}}
ATTRIBUTE_ORDER = ("size", "color", "shape")
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}
FINAL = {"list": "answer", "count_first": "so answer", "prose": "thus answer"}


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    row: int
    col: int

    def get(self, attribute: str) -> str:
        return getattr(self, attribute)

    def to_list(self) -> list[Any]:
        return [self.shape, self.color, self.size, self.row, self.col]


def scene_from_metadata(metadata: Mapping[str, Any]) -> tuple[Obj, ...]:
    """The scene a sample's metadata records (``[shape, color, size, row, col]`` per object)."""
    return tuple(Obj(*o) for o in metadata["scene"])


def random_scene(rng: random.Random) -> tuple[Obj, ...]:
    n = rng.randint(MIN_OBJECTS, MAX_OBJECTS)
    cells = sorted(rng.sample(range(GRID * GRID), n))
    return tuple(Obj(rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(SIZES), c // GRID, c % GRID)
                 for c in cells)


def render(scene: Sequence[Obj]):
    """Draw a scene on a white 48 px image, one object per 16 px cell."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for o in scene:
        cx, cy = (o.col + 0.5) * CELL - 0.5, (o.row + 0.5) * CELL - 0.5
        r = 6.5 if o.size == "big" else 3.5
        fill = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif o.shape == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif o.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        else:  # diamond
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    return image


# ---------------------------------------------------------------------------------------------
# programs: what a question asks, as data (recorded in the metadata)
# ---------------------------------------------------------------------------------------------


def matches(o: Obj, filt: Mapping[str, str]) -> bool:
    return all(o.get(a) == v for a, v in filt.items())


def mention_attributes(filt: Mapping[str, str]) -> tuple[str, ...]:
    """Which attributes a trace names of an object that passed ``filt``: colour and shape unless the
    filter fixed them; the size when it fixed both."""
    rest = tuple(a for a in ("color", "shape") if a not in filt)
    if not rest:
        return ("size",)
    return tuple(a for a in ATTRIBUTE_ORDER if a in rest)


def label(filt: Mapping[str, str]) -> str:
    return " ".join(filt[a] for a in ATTRIBUTE_ORDER if a in filt) + " shapes"


def _phrase(words: Mapping[str, str] | Obj, attributes: Sequence[str]) -> str:
    get = words.get if isinstance(words, Obj) else words.__getitem__
    return " ".join(get(a) for a in ATTRIBUTE_ORDER if a in attributes)


def expected_groups(scene: Sequence[Obj], program: Mapping[str, Any]) -> list[list[Obj]]:
    """The objects each sentence of a faithful trace is about (operand order)."""
    if program["kind"] == "relation":
        ref, nb = _relation_pair(scene, program)
        return [[ref, nb]]
    if program["kind"] == "cell":
        return [[_cell_object(scene, program)]]
    return [[o for o in scene if matches(o, f)] for f in program["filters"]]


def _cell_object(scene: Sequence[Obj], program: Mapping[str, Any]) -> Obj:
    row, col = program["cell"]
    return next(o for o in scene if (o.row, o.col) == (row, col))


def _relation_pair(scene: Sequence[Obj], program: Mapping[str, Any]) -> tuple[Obj, Obj]:
    ref = next(o for o in scene if matches(o, program["reference"]))
    dr, dc = RELATIONS[program["relation"]]
    nb = next(o for o in scene if (o.row, o.col) == (ref.row + dr, ref.col + dc))
    return ref, nb


def answer_of(scene: Sequence[Obj], program: Mapping[str, Any]) -> str:
    groups = expected_groups(scene, program)
    kind = program["kind"]
    if kind in ("count", "count_and"):
        return str(len(groups[0]))
    if kind == "compare":
        return "yes" if len(groups[0]) > len(groups[1]) else "no"
    if kind == "difference":
        return str(len(groups[0]) - len(groups[1]))
    return groups[0][-1].get(program["ask"])  # relation: the neighbour; cell: the object itself


def _draw_program(scene: Sequence[Obj], kind: str, rng: random.Random) -> dict[str, Any] | None:
    values = {"color": list(COLORS), "shape": list(SHAPES), "size": list(SIZES)}
    present = {a: sorted({o.get(a) for o in scene}) for a in values}

    def value(attribute: str) -> str:  # lean to values in the scene, so counts are not mostly 0
        return rng.choice(present[attribute] if rng.random() < 0.75 else values[attribute])

    if kind == "count":
        a = rng.choice(["color", "shape", "size"])
        return {"kind": kind, "filters": [{a: value(a)}]}
    if kind == "count_and":
        a, b = rng.sample(["color", "shape", "size"], 2)
        if rng.random() < 0.7:  # mostly a conjunction some object satisfies
            o = rng.choice(scene)
            return {"kind": kind, "filters": [{a: o.get(a), b: o.get(b)}]}
        return {"kind": kind, "filters": [{a: value(a), b: value(b)}]}
    if kind in ("compare", "difference"):
        a = rng.choice(["color", "shape"] if kind == "difference" else ["color", "shape", "size"])
        pool = values[a]
        x, y = rng.sample(pool, 2)
        if rng.random() < 0.75 and len(present[a]) >= 2:
            x, y = rng.sample(present[a], 2)
        program = {"kind": kind, "filters": [{a: x}, {a: y}]}
        cx, cy = (sum(matches(o, f) for o in scene) for f in program["filters"])
        if kind == "difference" and cx < cy:
            program["filters"].reverse()
        if kind == "compare" and cx != cy and (cx > cy) != (rng.random() < 0.5):  # balance yes and no
            program["filters"].reverse()
        return program
    if kind == "relation":
        rng_objects = list(scene)
        rng.shuffle(rng_objects)
        for ref in rng_objects:
            if sum(o.color == ref.color and o.shape == ref.shape for o in scene) != 1:
                continue
            relations = [r for r, (dr, dc) in RELATIONS.items()
                         if any((o.row, o.col) == (ref.row + dr, ref.col + dc) for o in scene)]
            if relations:
                return {"kind": kind, "reference": {"color": ref.color, "shape": ref.shape},
                        "relation": rng.choice(relations), "ask": rng.choice(["color", "shape", "size"])}
        return None
    if kind == "cell":
        o = rng.choice(scene)
        return {"kind": kind, "cell": [o.row, o.col], "ask": rng.choice(["color", "shape", "size"])}
    raise ValueError(f"unknown shapes_reason question kind {kind!r}; "
                     f"known: {', '.join(QUESTION_KINDS + PERCEPTION_KINDS)}")


def question_text(program: Mapping[str, Any]) -> str:
    kind = program["kind"]
    if kind in ("count", "count_and"):
        return f"how many {label(program['filters'][0])} are there ?"
    a, b = (label(f) for f in program.get("filters", [{}, {}]))
    if kind == "compare":
        return f"are there more {a} than {b} ?"
    if kind == "difference":
        return f"how many more {a} than {b} are there ?"
    ask = {"color": "what color", "shape": "what shape", "size": "what size"}[program["ask"]]
    if kind == "cell":
        row, col = program["cell"]
        return f"{ask} is the shape at {ROWS[row]} {COLS[col]} ?"
    ref = _phrase(program["reference"], ("color", "shape"))
    return f"{ask} is the shape {program['relation']} the {ref} ?"


# ---------------------------------------------------------------------------------------------
# traces: three templates
# ---------------------------------------------------------------------------------------------


def _order(objects: Sequence[Obj], template: str) -> list[Obj]:
    """Enumeration order: reading order, reverse reading order, column by column."""
    if template == "list":
        return sorted(objects, key=lambda o: (o.row, o.col))
    if template == "count_first":
        return sorted(objects, key=lambda o: (o.row, o.col), reverse=True)
    return sorted(objects, key=lambda o: (o.col, o.row))


def _group_sentence(filt: Mapping[str, str], objects: Sequence[Obj], template: str) -> str:
    attributes = mention_attributes(filt)
    names = [_phrase(o, attributes) for o in _order(objects, template)] or ["none"]
    n = len(objects)
    if template == "list":
        return f"{label(filt)} : {' , '.join(names)} = {n} ."
    if template == "count_first":
        return f"{n} {label(filt)} : {' , '.join(names)} ."
    return f"{label(filt)} are {' and '.join(names)} , so {n} ."


def trace(scene: Sequence[Obj], program: Mapping[str, Any], template: str) -> str:
    """The reference response: the trace in ``template``, then ``answer : X``."""
    answer = answer_of(scene, program)
    final = f"{FINAL[template]} : {answer}"
    if program["kind"] == "relation":
        ref, nb = _relation_pair(scene, program)
        r = _phrase(ref, ("color", "shape"))
        n = _phrase(nb, ATTRIBUTE_ORDER)
        rel = program["relation"]
        if template == "list":
            body = f"{r} at {ROWS[ref.row]} {COLS[ref.col]} . {rel} it : {n} ."
        elif template == "count_first":
            body = f"{rel} the {r} is the {n} ."
        else:
            body = f"the {n} is {rel} the {r} ."
        return f"{body} {final}"
    if program["kind"] == "cell":
        o = _cell_object(scene, program)
        where, what = f"{ROWS[o.row]} {COLS[o.col]}", _phrase(o, ATTRIBUTE_ORDER)
        body = {"list": f"{where} : {what} .", "count_first": f"at {where} is the {what} .",
                "prose": f"the {what} is at {where} ."}[template]
        return f"{body} {final}"
    groups = expected_groups(scene, program)
    return " ".join(_group_sentence(f, g, template) for f, g in zip(program["filters"], groups)) + f" {final}"


# ---------------------------------------------------------------------------------------------
# checking a response against the scene
# ---------------------------------------------------------------------------------------------


def final_answer(text: str) -> str | None:
    """X of the last ``answer : X`` (the word after it), or None."""
    words = text.split()
    for i in range(len(words) - 2, -1, -1):
        if words[i] == "answer" and i + 1 < len(words) and words[i + 1] == ":":
            return words[i + 2] if i + 2 < len(words) else None
    return None


@dataclass
class ParsedSentence:
    mentions: list[dict[str, str]]
    counts: list[int]


def parse_trace(text: str) -> list[ParsedSentence]:
    """The sentences of a response before its final ``answer :``, each with its mentions and counts."""
    words = text.split()
    for i in range(len(words) - 2, -1, -1):
        if words[i] == "answer" and words[i + 1] == ":":
            words = words[:i]
            break
    sentences: list[list[str]] = [[]]
    for w in words:
        if w == ".":
            sentences.append([])
        else:
            sentences[-1].append(w)
    out = []
    for s in sentences:
        if not s:
            continue
        mentions, counts, run = [], [], []
        for k, w in enumerate([*s, "<end>"]):
            if w in ATTRIBUTE:
                run.append(w)
                continue
            if run:
                if w not in ("shapes", ":"):
                    mentions.append({ATTRIBUTE[x]: x for x in run})
                run = []
            if w.isdigit():
                counts.append(int(w))
        out.append(ParsedSentence(mentions, counts))
    return out


def _match(mentions: Sequence[Mapping[str, str]], objects: Sequence[Obj]) -> int:
    """How many mentions pair with distinct objects that agree with every attribute they name."""
    free = list(objects)
    matched = 0
    for m in sorted(mentions, key=len, reverse=True):  # most specific first
        for o in free:
            if all(o.get(a) == v for a, v in m.items()):
                free.remove(o)
                matched += 1
                break
    return matched


def faithfulness(response: str, metadata: Mapping[str, Any]) -> float:
    """Share of a trace's claims that the scene bears out, in [0, 1].

    Per expected sentence k (operand k of the question; relational traces pool their sentences):
    object mentions are paired with the objects the sentence is about (a mention pairs with an
    object that has every attribute it names); each sentence's count must equal its number of
    objects. Score = (paired mentions + right counts) / (max(mentions, objects) per sentence +
    counts expected, plus every extra count or sentence claimed). An empty trace scores 0.
    """
    scene = scene_from_metadata(metadata)
    program = metadata["program"]
    groups = expected_groups(scene, program)
    parsed = parse_trace(response)
    if not parsed:
        return 0.0
    if program["kind"] in ("relation", "cell"):
        parsed = [ParsedSentence([m for p in parsed for m in p.mentions], [c for p in parsed for c in p.counts])]
        want_counts = False
    else:
        want_counts = True
    good = total = 0
    for k, objects in enumerate(groups):
        p = parsed[k] if k < len(parsed) else ParsedSentence([], [])
        good += _match(p.mentions, objects)
        total += max(len(p.mentions), len(objects))
        if want_counts:
            good += int(bool(p.counts) and p.counts[0] == len(objects))
            total += 1 + max(0, len(p.counts) - 1)
        else:
            total += len(p.counts)
    for extra in parsed[len(groups):]:  # claims about nothing the question asked
        total += len(extra.mentions) + len(extra.counts)
    return good / total if total else 0.0


# ---------------------------------------------------------------------------------------------
# the splits
# ---------------------------------------------------------------------------------------------


def _candidates(seed: int, kinds: Sequence[str], templates: Sequence[str]) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    while True:
        scene = random_scene(rng)
        kind = rng.choice(list(kinds))
        program = _draw_program(scene, kind, rng)
        if program is None:
            continue
        template = rng.choice(list(templates))
        yield {"scene": scene, "program": program, "template": template}


def generate_shapes_reason(
    n_train: int = 2048,
    n_validation: int = 2048,
    n_test: int = 1024,
    *,
    seed: int = 0,
    question_kinds: Sequence[str] = QUESTION_KINDS,
    templates: Sequence[str] = TEMPLATES,
) -> dict[str, list[VQASample]]:
    """The task's splits; the same arguments always give the same samples, ids and pixels.

    Responses outside 8..24 words (= tokens of the word-level tokenizer) are redrawn.
    """
    unknown = [t for t in templates if t not in TEMPLATES]
    if unknown:
        raise ValueError(f"unknown template(s) {unknown}; known: {', '.join(TEMPLATES)}")
    wanted = {"train": n_train, "validation": n_validation, "test": n_test}
    out: dict[str, list[VQASample]] = {s: [] for s in SPLITS}

    def keyed() -> Iterator[tuple[str, dict[str, Any]]]:
        for item in _candidates(seed, question_kinds, templates):
            scene, program = item["scene"], item["program"]
            response = trace(scene, program, item["template"])
            if not MIN_TOKENS <= len(response.split()) <= MAX_TOKENS:
                continue
            question = question_text(program)
            scene_list = [o.to_list() for o in scene]
            yield (f"{json.dumps(scene_list)}|{question}",
                   {**item, "response": response, "question": question, "scene_list": scene_list})

    for split, index, item in deal_into_splits(keyed(), wanted, seed, what="shapes_reason task"):
        scene, program, scene_list = item["scene"], item["program"], item["scene_list"]
        response, question = item["response"], item["question"]
        out[split].append(VQASample(
            id=f"shapes_reason-{seed}-{split}-{index:06d}",
            images=(render(scene),),
            question=question,
            answer=response,
            metadata={"kind": program["kind"], "template": item["template"], "program": program,
                      "answer_text": answer_of(scene, program), "scene": scene_list},
        ))
    return out


def shapes_reason_vocabulary() -> list[str]:
    """Every word the task's questions and traces can contain (what its tokenizer is trained on)."""
    words = set(COLORS) | set(SHAPES) | set(SIZES) | set(ROWS) | set(COLS)
    words |= {str(i) for i in range(MAX_OBJECTS + 1)} | {"yes", "no", "none"}
    phrases = ["how many shapes are there ?", "are there more than ?", "how many more than are there ?",
               "what color size shape is the left of right of above below the ?",
               ": , = . so thus answer and at it"]
    for p in phrases:
        words |= set(p.split())
    return sorted(words)
