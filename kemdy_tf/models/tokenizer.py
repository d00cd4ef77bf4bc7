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

A run on a pretrained text backbone (`text.backbone`, models.backbones) uses that
preset's own tokenizer instead, packed the same way (`PresetTokenizer`: fixed length,
pad id 0, an empty text all pad); `load_run_tokenizer` opens either.
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


# === A pretrained backbone's own tokenizer (text.backbone; see models.backbones) ===

PRESET_TOKENIZER_CONFIG = "tokenizer.json"
PRESET_TOKENIZER_ASSETS = "assets"


def swap_pad_id(token_ids, pad_id: int):
    """Trade ids `pad_id` and 0: a backbone's ids <-> the project's ids (pad 0).

    Every model here reads `token_ids != 0` as its padding mask; XLM-RoBERTa pads with
    1 (0 is `<s>`). The swap is its own inverse, so the same call maps both ways;
    with `pad_id` 0 (BERT, DistilBERT) ids are unchanged.

    Example:
        >>> swap_pad_id(np.array([[0, 5, 2, 1, 1]]), pad_id=1)  # <s> x </s> <pad> <pad>
        array([[1, 5, 2, 0, 0]])
    """
    from keras import ops

    if not pad_id:
        return token_ids
    pad = ops.equal(token_ids, pad_id)
    zero = ops.equal(token_ids, 0)
    swapped = ops.where(pad, ops.zeros_like(token_ids), token_ids)
    return ops.where(zero, ops.full_like(token_ids, pad_id), swapped)


class PresetTokenizer:
    """A keras-hub preset tokenizer, shaped like the seed's: strings -> int32 [batch, max_tokens].

    Each text becomes `start piece... end` (the backbone's special tokens, e.g. `<s>`
    and `</s>` or `[CLS]` and `[SEP]`), cut to `max_tokens` and padded; an empty or
    blank text becomes an all-pad row (no transcript, as with the seed tokenizer).
    The ids are the backbone's own with its pad id and 0 traded (`swap_pad_id`), so
    pad is 0 everywhere in this project; the backbone wrapper trades them back.

    Args:
        tokenizer: a `keras_hub.models.Tokenizer` with start, end and pad tokens.
        max_tokens: fixed output length (`features.max_tokens`).

    Example:
        >>> tokenizer = PresetTokenizer(keras_hub.models.Tokenizer.from_preset(dir), 64)
        >>> tokenizer(tf.constant(["안녕하세요", ""])).shape
        TensorShape([2, 64])
    """

    def __init__(self, tokenizer, max_tokens: int):
        import keras_hub

        missing = [name for name in ("start_token_id", "end_token_id", "pad_token_id")
                   if getattr(tokenizer, name, None) is None]
        if missing:
            raise ValueError(f"{type(tokenizer).__name__} has no {missing}: a text backbone's tokenizer "
                             "needs start, end and pad tokens")
        if max_tokens < 3:
            raise ValueError(f"features.max_tokens={max_tokens} leaves no room beside the start and end tokens")
        self.tokenizer = tokenizer
        self.sequence_length = int(max_tokens)
        self.pad_id = int(tokenizer.pad_token_id)
        self._packer = keras_hub.layers.StartEndPacker(
            sequence_length=self.sequence_length, start_value=tokenizer.start_token_id,
            end_value=tokenizer.end_token_id, pad_value=self.pad_id, dtype="int32")

    def vocabulary_size(self) -> int:
        return int(self.tokenizer.vocabulary_size())

    def __call__(self, texts):
        import tensorflow as tf

        texts = tf.convert_to_tensor(texts, tf.string)
        ids = tf.cast(self._packer(self.tokenizer(texts)), tf.int32)
        blank = tf.equal(tf.strings.length(tf.strings.strip(texts)), 0)
        ids = tf.where(blank[..., tf.newaxis], tf.fill(tf.shape(ids), self.pad_id), ids)
        return swap_pad_id(ids, self.pad_id)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the tokenizer (config + vocabulary assets) into `folder`, atomically."""
        import json

        import keras

        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        (tmp / PRESET_TOKENIZER_ASSETS).mkdir(parents=True)
        config = keras.saving.serialize_keras_object(self.tokenizer)
        (tmp / PRESET_TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
        self.tokenizer.save_assets(str(tmp / PRESET_TOKENIZER_ASSETS))
        os.replace(tmp, folder)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, max_tokens: int) -> "PresetTokenizer":
        """The tokenizer `save` wrote into `folder` (no network, no backbone needed)."""
        import json

        import keras

        folder = Path(folder)
        path = folder / PRESET_TOKENIZER_CONFIG
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            tokenizer = keras.saving.deserialize_keras_object(config)
            tokenizer.load_assets(str(folder / PRESET_TOKENIZER_ASSETS))
        except FileNotFoundError:
            raise ValueError(f"{path} is missing: {folder} is not a saved preset tokenizer") from None
        except Exception as error:
            raise ValueError(f"cannot load the preset tokenizer in {folder}: {type(error).__name__}: {error}") from None
        return cls(tokenizer, max_tokens)


def load_run_tokenizer(path: str | os.PathLike, max_tokens: int):
    """A run's tokenizer: its SentencePiece model file, or the folder of a backbone's own tokenizer."""
    path = Path(path)
    if path.is_dir():
        return PresetTokenizer.load(path, max_tokens)
    return load_tokenizer(path, max_tokens)
