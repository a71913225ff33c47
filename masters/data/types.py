"""The sample type every stage passes around (torch-free, so banks and specs can import it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from masters.errors import DataError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from PIL import Image

# An image is either decoded already (the shapes task, HF tables) or a path that is opened when the
# adapter needs the pixels, so a large LLaVA-style corpus is not held in memory.
ImageLike = Union["Image.Image", str, Path]


@dataclass(frozen=True)
class VQASample:
    """One visual question with its reference answer.

    ``answer`` is the exact response the model should give: for a multiple-choice question it is the
    letter (``"B"``), with the options in ``choices`` and the option text in
    ``metadata["answer_text"]``. ``images`` may be empty (a text-only record); each image becomes one
    image placeholder before the question, in order. ``id`` is unique within a data set and stable
    across runs: banks and scores are keyed by it.
    """

    id: str
    images: tuple[ImageLike, ...]
    question: str
    answer: str | None = None
    choices: tuple[str, ...] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def load_images(self) -> list[Image.Image]:
        """The images as RGB PIL images (paths are opened here; errors name the sample)."""
        return [load_image(image, where=f"sample {self.id!r}") for image in self.images]


def load_image(image: ImageLike, *, where: str) -> Image.Image:
    from PIL import Image

    from masters.files import guarded_load

    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    path = Path(image)
    if not path.is_file():
        raise DataError(f"image not found: {path}", where=where, fix="check the image path and image_root")
    # Corrupt, unreadable or decompression-bomb images (PIL's pixel limit) become one DataError.
    with guarded_load(f"{where}, image {path}", "image", fix="replace or remove this image (a decompression "
                      "bomb is refused: PIL's MAX_IMAGE_PIXELS)"):
        with Image.open(path) as opened:
            return opened.convert("RGB")
