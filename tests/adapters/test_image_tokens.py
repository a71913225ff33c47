"""Image-token count mismatches fail fast with a message naming the sample, never NaN."""

from __future__ import annotations

import pytest

from masters.adapters import resolve_adapter
from masters.errors import ImageTokenMismatchError, MastersError


def test_processor_model_mismatch_raises_before_forward(tiny_dirs, shapes_samples):
    adapter = resolve_adapter(tiny_dirs("llava"))
    adapter.processor.num_additional_image_tokens = 2  # the processor now writes one token too many
    with pytest.raises(ImageTokenMismatchError) as err:
        adapter.teacher_force(shapes_samples[:1], [[5, 3]])
    assert shapes_samples[0].id in str(err.value) and "fix:" in str(err.value)


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3", "internvl"])
def test_extra_placeholder_in_question_is_a_masters_error(tiny_dirs, shapes_samples, family):
    import dataclasses

    adapter = resolve_adapter(tiny_dirs(family))
    token = adapter.tokenizer.convert_ids_to_tokens(adapter.image_token_id())
    bad = dataclasses.replace(shapes_samples[0], question=f"{token} what ?")
    with pytest.raises(MastersError):
        adapter.generate([bad], max_new_tokens=1, temperature=0)
