"""A word-level tokenizer trained offline on the shapes task's text, shared by every tiny model.

One vocabulary serves every family: it holds the special tokens of all of them, so a teacher and a
student of any size built from the same tokenizer directory have identical token-to-id maps. Each
family's copy differs only in its chat template and in which tokens it calls EOS, image, etc.
"""

from __future__ import annotations

from collections.abc import Iterable

# Special tokens of every supported family's chat template and processor.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<unk>", "<bos>", "<eos>",
    "<image>",  # llava, idefics3
    "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
    "<img>", "</img>", "<IMG_CONTEXT>", "<video>",  # internvl
    "<fake_token_around_image>", "<global-img>", "<end_of_utterance>",  # idefics3 / smolvlm
    "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>",  # gemma3
)
# Words the chat templates write around the question.
TEMPLATE_WORDS: tuple[str, ...] = ("USER", "ASSISTANT", "User", "Assistant", "user", "assistant", "model", "system", ":", "\n")


def train_word_tokenizer(corpus: Iterable[str]):
    """A ``PreTrainedTokenizerFast`` with one id per word of ``corpus`` plus every special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=1)
    tok.train_from_iterator([*corpus, " ".join(TEMPLATE_WORDS)], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>",
        padding_side="left",  # generation needs left padding
    )
