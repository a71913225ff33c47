"""``color_blocks``: one coloured square on a grey image; what colour is it, which side is it on."""

from __future__ import annotations

import random

from masters.api import DataError, VQASample

COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30), "yellow": (230, 210, 20)}
SIDES = ("left", "right")


def _image(size: int, color: str, side: str, rng: random.Random):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (128, 128, 128))
    half, box = size // 2, max(4, size // 3)
    x0 = rng.randrange(0, half - box + 1) + (half if side == "right" else 0)
    y0 = rng.randrange(0, size - box + 1)
    ImageDraw.Draw(image).rectangle((x0, y0, x0 + box - 1, y0 + box - 1), fill=COLORS[color])
    return image


class ColorBlocksTask:
    def __init__(self, spec, **context):
        self.spec = spec

    def splits(self):
        spec = self.spec
        if spec.n_train < 1:
            raise DataError("color_blocks: empty train split", where="task.n_train", fix="set n_train >= 1")
        rng = random.Random(spec.seed)
        counts = {"train": spec.n_train, "validation": spec.n_validation, "test": spec.n_test}
        out, i = {}, 0
        for split, n in counts.items():
            samples = []
            for _ in range(n):
                color, side = rng.choice(sorted(COLORS)), rng.choice(SIDES)
                size = spec.image_sizes[i % len(spec.image_sizes)]
                image = _image(size, color, side, rng)
                if i % 2 == 0:
                    question, answer = "what color is the square ?", color
                else:
                    question, answer = "is the square on the left or right ?", side
                samples.append(VQASample(f"color_blocks-{spec.seed}-{i}", (image,), question, answer,
                                         metadata={"split": split}))
                i += 1
            out[split] = samples
        return out
