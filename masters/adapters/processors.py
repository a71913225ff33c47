"""Image-only processor subclasses.

Qwen-VL, InternVL and SmolVLM processors require a video processor, which needs torchvision (not
importable next to every torch build). These subclasses drop it: their ``__init__`` has no video
argument, so ``ProcessorMixin`` neither builds nor saves one. A processor saved with them must be
reloaded with the same subclass (``AutoProcessor`` silently returns only the tokenizer for it),
which is what the adapters do.
"""

from __future__ import annotations

from transformers import ProcessorMixin
from transformers import (
    InternVLProcessor,
    Qwen2_5_VLProcessor,
    Qwen2VLProcessor,
    Qwen3VLProcessor,
    SmolVLMProcessor,
)


class Qwen2VLImageProcessor(Qwen2VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2_5_VLImageProcessor(Qwen2_5_VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen3VLImageProcessor(Qwen3VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class InternVLImageProcessor(InternVLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, image_seq_length=image_seq_length,
                         chat_template=chat_template, **kwargs)


class SmolVLMImageProcessor(SmolVLMProcessor):
    def __init__(self, image_processor, tokenizer, image_seq_len: int = 169, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, image_seq_len=image_seq_len,
                         chat_template=chat_template, **kwargs)

    # SmolVLM's own override reads video sampling defaults off the (absent) video processor.
    apply_chat_template = ProcessorMixin.apply_chat_template
