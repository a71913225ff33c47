"""Teacher forcing returns exactly the response positions of a plain full-sequence forward."""

from __future__ import annotations

import pytest
import torch

from masters.adapters import resolve_adapter


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_teacher_force_equals_naive_full_forward(tiny_dirs, shapes_samples, family):
    adapter = resolve_adapter(tiny_dirs(family))
    responses = adapter.response_ids([s.answer for s in shapes_samples[:3]])
    responses[0] = responses[0][:-1] + [7, 8] + responses[0][-1:]
    with torch.no_grad():
        forced = adapter.teacher_force(shapes_samples[:3], responses)
        for i, (s, r) in enumerate(zip(shapes_samples[:3], responses)):
            batch = adapter.encode([s], [r])
            full = adapter.model(**batch.inputs, use_cache=False).logits[0]  # every position
            n = len(r)
            expected_logits = full[-n - 1 : -1]  # the logit at t predicts token t + 1
            expected = torch.log_softmax(expected_logits, -1).gather(-1, torch.tensor(r)[:, None])[:, 0]
            torch.testing.assert_close(forced.logits[i, :n], expected_logits, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(forced.logprobs[i, :n], expected, atol=1e-4, rtol=1e-4)
            assert forced.mask[i].sum() == n
            assert torch.all(forced.logprobs[i, n:] == 0)


def test_logits_are_response_positions_only_and_cut_to_vocab_limit(tiny_dirs, shapes_samples):
    adapter = resolve_adapter(tiny_dirs("llava"))
    responses = [[5, adapter.eos_token_ids[0]], [adapter.eos_token_ids[0]]]
    forced = adapter.teacher_force(shapes_samples[:2], responses, vocab_limit=50)
    assert forced.logits.shape == (2, 2, 50)
    assert forced.mask.tolist() == [[True, True], [True, False]]
    full = adapter.teacher_force(shapes_samples[:2], responses)
    assert full.logits.shape[-1] == adapter.model.get_output_embeddings().weight.shape[0]
    torch.testing.assert_close(forced.logprobs, full.logprobs)  # log-probs use the full vocabulary


def test_empty_response_is_rejected(tiny_dirs, shapes_samples):
    adapter = resolve_adapter(tiny_dirs("llava"))
    with pytest.raises(ValueError, match="non-empty"):
        adapter.teacher_force(shapes_samples[:1], [[]])


def test_response_ids_end_with_eos_and_decode_drops_it(tiny_dirs):
    adapter = resolve_adapter(tiny_dirs("qwen2_vl"))
    (ids,) = adapter.response_ids(["red"])
    assert ids[-1] == adapter.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert adapter.decode([ids]) == ["red"]


def test_generation_stops_at_eos_and_passes_extra_kwargs(tiny_dirs, shapes_samples):
    adapter = resolve_adapter(tiny_dirs("llava"))
    eos = adapter.eos_token_ids[0]

    class ForceEos:  # a logits processor that makes EOS the only choice after one token
        def __call__(self, input_ids, scores):
            scores = scores.clone()
            if input_ids.shape[1] > self.start:
                scores[:, :] = -float("inf")
                scores[:, eos] = 0
            return scores

    proc = ForceEos()
    proc.start = adapter.encode(shapes_samples[:2]).inputs["input_ids"].shape[1]
    out = adapter.generate(shapes_samples[:2], max_new_tokens=6, do_sample=False, logits_processor=[proc])
    assert [len(r) for r in out] == [2, 2] and all(r[-1] == eos for r in out)


def test_max_pixels_reaches_the_qwen_image_processor(tiny_dirs, shapes_samples):
    from masters.adapters.resolve import adapter_spec_for

    path = tiny_dirs("qwen2_vl")
    big = adapter_spec_for(path).model_copy(update={"min_pixels": 64 * 64, "max_pixels": 64 * 64})
    default = resolve_adapter(path).encode(shapes_samples[:1]).inputs["image_grid_thw"]
    bigger = big.build(path=path).encode(shapes_samples[:1]).inputs["image_grid_thw"]
    assert default.prod() * 4 == bigger.prod()  # 32 px -> 64 px: four times the patches


def test_max_pixels_bounds_images_for_fixed_size_towers(tiny_dirs):
    from PIL import Image

    from masters.adapters.resolve import adapter_spec_for
    from masters.data import VQASample

    path = tiny_dirs("llava")
    adapter = adapter_spec_for(path).model_copy(update={"max_pixels": 16 * 16}).build(path=path)
    sample = VQASample("big", (Image.new("RGB", (128, 64)),), "what color is the circle ?", "red")
    (image,) = adapter._images(sample)
    assert image.width * image.height <= 16 * 16 + 32
    assert torch.isfinite(adapter.teacher_force([sample], [[5, 3]]).logprobs).all()
