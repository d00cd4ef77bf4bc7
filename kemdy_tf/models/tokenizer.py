"""SentencePiece training on the training transcripts, and the in-graph keras-hub tokenizer.

The seed used KoBERT's pretrained SentencePiece model; nothing may be downloaded at
run time here, so each run trains its own model on its training split.

Choices:
    * ids: `<pad>` = 0 (the text encoder's mask is `token_ids != 0`), `<unk>` = 1,
      no BOS/EOS (nothing reads them: the encoders pool with a GRU over the mask).
    * unigram model, `character_coverage=0.9995` (the SentencePiece recommendation
      for CJK scripts: Korean syllables are many, the rarest 0.05% of characters
      map to `<unk>`).
    * the vocabulary size adapts to the corpus: with `hard_vocab_limit=False` a
      small corpus yields fewer pieces instead of an error ("Vocabulary size too
      high"), and if the corpus needs more distinct characters than `vocab_size`
      allows, the size is raised to fit them (with a warning). The model's
      `vocabulary_size()` is the truth; size embeddings from it.
    * one training thread and a fixed random seed, so the same texts give the
      same model.
"""

from __future__ import annotations

import io
import os
import re
import typing
import warnings
from pathlib import Path

import sentencepiece as spm

PAD_ID = 0
UNK_ID = 1
_META_PIECES = 2  # <pad>, <unk>
_TOO_FEW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")

# Corpus-sized vocabulary (FeatureConfig.vocab_size = 0): see corpus_vocab_size.
MIN_CORPUS_VOCAB = 1000
MAX_CORPUS_VOCAB = 8000
WORDS_PER_PIECE = 4
# Corpus-sized sequence length (FeatureConfig.max_tokens = 0): see corpus_max_tokens.
MAX_TOKENS_PERCENTILE = 99.0
MIN_CORPUS_TOKENS = 8
MAX_CORPUS_TOKENS = 256


def corpus_vocab_size(texts: typing.Iterable[str]) -> int:
    """A SentencePiece vocabulary size for these training texts.

    Korean has thousands of syllable characters: a vocabulary near the number of
    distinct characters makes SentencePiece a character tokenizer (on NSMC, 1,000
    asked gave 1,575 pieces that were ~1 per character, and 64 tokens truncated 12% of
    the reviews). The size is the distinct characters plus one piece per
    `WORDS_PER_PIECE` distinct space-separated words, clipped to
    [`MIN_CORPUS_VOCAB`, `MAX_CORPUS_VOCAB`]; SentencePiece's soft limit still
    shrinks it on a tiny corpus. The cap is measured (docs/text_real.md): on 20k NSMC
    reviews 8k pieces beat both 4k and 16k.

    Example:
        >>> corpus_vocab_size(["오늘 날씨가 좋네요", "그 영화 봤어요?"])
        1000
    """
    words, chars = set(), set()
    for text in texts:
        if isinstance(text, str):
            words.update(text.split())
            chars.update(text)
    size = len(chars) + len(words) // WORDS_PER_PIECE
    return int(min(MAX_CORPUS_VOCAB, max(MIN_CORPUS_VOCAB, size)))


def corpus_max_tokens(token_lengths: typing.Iterable[int], percentile: float = MAX_TOKENS_PERCENTILE,
                      multiple: int = 8) -> int:
    """A fixed sequence length from the training texts' token counts.

    The `percentile` of the lengths, rounded up to a multiple of `multiple`, clipped to
    [`MIN_CORPUS_TOKENS`, `MAX_CORPUS_TOKENS`]. Report the truncated share with
    `truncated_share(lengths, max_tokens)`.

    Example:
        >>> corpus_max_tokens([3, 5, 9, 30])
        32
    """
    import numpy as np

    lengths = np.asarray(list(token_lengths), dtype="float64")
    if lengths.size == 0:
        return MIN_CORPUS_TOKENS
    value = float(np.percentile(lengths, percentile))
    value = int(np.ceil(value / multiple) * multiple)
    return int(min(MAX_CORPUS_TOKENS, max(MIN_CORPUS_TOKENS, value)))


def token_lengths(model_path: str | os.PathLike, texts: typing.Iterable[str]) -> list[int]:
    """Number of pieces of each text under a trained model (no truncation)."""
    processor = spm.SentencePieceProcessor(model_file=str(model_path))
    return [len(ids) for ids in processor.encode([t if isinstance(t, str) else "" for t in texts])]


def truncated_share(lengths: typing.Iterable[int], max_tokens: int) -> float:
    """Share of texts longer than `max_tokens` pieces (cut by the tokenizer)."""
    lengths = list(lengths)
    return sum(n > max_tokens for n in lengths) / len(lengths) if lengths else 0.0


def train_sentencepiece(
    texts: typing.Iterable[str], model_path: str | os.PathLike, vocab_size: int, seed: int = 0
) -> Path:
    """Train a unigram SentencePiece model on `texts` and write it to `model_path`.

    Args:
        texts: transcripts (the training split's); empty ones are skipped.
        model_path: where the `.model` file goes (no `.vocab` file is written).
        vocab_size: wanted number of pieces, specials included (a soft limit,
            see the module docstring); 0 or less: `corpus_vocab_size(texts)`.
        seed: SentencePiece's random seed.

    Returns:
        `model_path` as a Path.

    Raises:
        ValueError: no non-empty text, or vocab_size < 3.
    """
    sentences = [t.strip() for t in texts if isinstance(t, str) and t.strip()]
    if not sentences:
        raise ValueError(f"cannot train a tokenizer for {model_path}: no non-empty transcript")
    if vocab_size <= 0:
        vocab_size = corpus_vocab_size(sentences)
    if vocab_size < _META_PIECES + 1:
        raise ValueError(f"vocab_size={vocab_size} leaves no room beside <pad> and <unk>")
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        proto = _train(sentences, vocab_size, seed)
    except RuntimeError as error:
        match = _TOO_FEW.search(str(error))
        if not match:
            raise
        needed = int(match.group(2))
        warnings.warn(
            f"tokenizer vocab_size={vocab_size} is below the {needed} pieces the corpus's "
            f"characters need; training {model_path} with vocab_size={needed}")
        proto = _train(sentences, needed, seed)
    tmp = model_path.with_name(model_path.name + ".tmp")
    tmp.write_bytes(proto)
    os.replace(tmp, model_path)
    return model_path


def _train(sentences: list[str], vocab_size: int, seed: int) -> bytes:
    spm.set_random_generator_seed(seed)
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buffer,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=0.9995,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=-1, eos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return buffer.getvalue()


def load_tokenizer(model_path: str | os.PathLike, max_tokens: int):
    """The in-graph tokenizer: strings -> int32 ids [..., max_tokens], padded with 0.

    Longer transcripts are cut at `max_tokens` pieces. Runs inside tf.data and
    SavedModels (TF Text op) and eagerly (the `sentencepiece` package).

    Args:
        model_path: a model written by `train_sentencepiece`.
        max_tokens: fixed output length.

    Returns:
        `keras_hub.tokenizers.SentencePieceTokenizer`.

    Raises:
        ValueError: the file is missing, not a SentencePiece model, or its pad id is not 0.
    """
    import keras_hub  # heavy (TensorFlow); only needed here

    path = Path(model_path)
    if not path.is_file():
        raise ValueError(f"tokenizer model {path} does not exist; train it with train_sentencepiece")
    proto = path.read_bytes()
    try:
        processor = spm.SentencePieceProcessor(model_proto=proto)
    except Exception as error:
        raise ValueError(f"{path} is not a SentencePiece model ({error})") from None
    if processor.pad_id() != PAD_ID:
        raise ValueError(
            f"{path} has pad id {processor.pad_id()}, the models need {PAD_ID}; "
            "retrain it with train_sentencepiece")
    # Bytes, not the path: keras-hub refuses proto paths while Keras safe mode is on.
    return keras_hub.tokenizers.SentencePieceTokenizer(
        proto=proto, sequence_length=max_tokens, dtype="int32")
