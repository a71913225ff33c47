"""The spec of the ``llava_next`` adapter. Torch-free on purpose: listing and validating never load it.

``model_types`` is how masters finds this adapter: a checkpoint directory whose ``config.json``
says ``"model_type": "llava_next"`` is claimed by it, with no claim hook needed.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from masters.api import AdapterSpec


class LlavaNextAdapterSpec(AdapterSpec):
    """LLaVA-NeXT (LLaVA-1.6): CLIP tower over anyres tiles, MLP projector, Llama/Mistral/Qwen2 text model.

    Each image is cut into a base tile plus the tiles of the best-fitting ``image_grid_pinpoints``
    resolution, so its image-token count depends on its size and aspect ratio.
    """

    implementation: ClassVar[str] = "masters_llava_next.adapter:LlavaNextAdapter"
    model_types: ClassVar[tuple[str, ...]] = ("llava_next",)
    name: Literal["llava_next"] = "llava_next"
