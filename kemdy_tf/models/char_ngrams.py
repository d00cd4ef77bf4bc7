"""Hashed character n-grams of a transcript, read from its token ids (the wide text path).

A TF-IDF character n-gram logistic regression beats a from-scratch transformer on real
Korean text with a few thousand to a few hundred thousand examples (docs/text_real.md):
characters carry Korean morphology (endings, particles, slang like ㅋㅋ) that a subword
vocabulary of the same corpus splits unevenly. The text classifier therefore also reads
a fastText-style bag of hashed character 1..n-grams (``fusion.char_ngrams``), concatenated
beside the deep summary like the audio functionals: a wide-and-deep classifier.

The model's input stays token ids (serving, LiteRT and XLA see the same contract), so the
n-grams are computed from the ids: each vocabulary piece's own n-grams come from a table
made once from the piece strings, and the n-grams that span two adjacent pieces are
hashed in-graph from the left piece's suffix hashes and the right piece's prefix hashes.
One rolling hash is used for both, so an n-gram gets the same bucket wherever it occurs.
N-grams spanning three or more pieces (a one-character piece in the middle) are left out.
"""

from __future__ import annotations

import itertools
import typing
import unicodedata

import keras
import numpy as np
from keras import ops

_PACKAGE = "kemdy_tf"
# Polynomial rolling hash over code points, modulo a Mersenne prime: products of two
# residues stay below 2**62, so int64 arithmetic is exact.
_HASH_BASE = 1_000_003
_HASH_MODULUS = 2**31 - 1


def _rolling_hash(text: str) -> int:
    value = 0
    for char in text:
        value = (value * _HASH_BASE + ord(char) + 1) % _HASH_MODULUS
    return value


def ngram_pieces(sentencepiece_proto: bytes) -> list[str]:
    """The piece strings of a SentencePiece model, control and unknown pieces blank
    (they spell no characters): the `pieces` argument of `PieceCharNgrams`."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=sentencepiece_proto)
    return ["" if processor.is_control(i) or processor.is_unknown(i) else processor.id_to_piece(i)
            for i in range(processor.get_piece_size())]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PieceCharNgrams(keras.layers.Layer):
    """Token ids -> hashed character n-gram ids of the text they spell.

    ``[B, T]`` int ids -> ``[B, T * per_step]`` int32 bucket ids in ``1..buckets``, 0 where
    there is none (padding, short pieces). Step t holds the n-grams inside piece t and
    those spanning pieces t and t+1.

    Args:
        pieces: the tokenizer's piece strings by id (`ngram_pieces`); "" for ids that
            spell nothing (padding, control, unknown).
        max_n: longest n-gram, in characters (1..max_n are all taken).
        buckets: number of hash buckets.
        max_piece_chars: longer pieces contribute the n-grams of their first this-many
            characters only (bounds the table width).
        jamo: decompose Hangul syllables into their jamo first (Unicode NFD: 감 -> ㄱ ㅏ ㅁ),
            so n-grams (and `max_n`, `max_piece_chars`) count jamo: Korean endings and
            particles change single jamo (했다 / 해요), which syllable n-grams see as
            unrelated characters.
        word_bounded: no n-gram crosses into the next word (a piece that starts with "▁"),
            except the ones that end with its "▁", as scikit-learn's `char_wb` pads each
            word with spaces. Off: n-grams span words too (NSMC: +.004 for a linear model;
            transcripts whose adjacent words are unrelated lose by it, docs/text_real.md).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> layer = PieceCharNgrams(["", "ab", "c"], max_n=2, buckets=100)
        >>> int((np.asarray(layer(np.array([[1, 2, 0]]))) > 0).sum())  # a b ab | c | bc
        5
    """

    def __init__(self, pieces: typing.Sequence[str], max_n: int = 4, buckets: int = 2**18,
                 max_piece_chars: int = 12, jamo: bool = False, word_bounded: bool = False, **kwargs):
        super().__init__(**kwargs)
        if int(max_n) < 1 or int(buckets) < 1 or int(max_piece_chars) < 1:
            raise ValueError(f"max_n, buckets and max_piece_chars must be >= 1, got {max_n}, {buckets}, "
                             f"{max_piece_chars}")
        if not pieces:
            raise ValueError("pieces is empty: pass the tokenizer's vocabulary (char_ngrams.ngram_pieces)")
        self.pieces = [str(p) for p in pieces]
        self.max_n, self.buckets, self.max_piece_chars = int(max_n), int(buckets), int(max_piece_chars)
        self.jamo, self.word_bounded = bool(jamo), bool(word_bounded)
        self._word_start = np.array([p.startswith("▁") for p in self.pieces], bool)
        self._within, self._prefix, self._suffix = self._tables()
        # Every (suffix length i, prefix length j) with i + j <= max_n: the spanning n-grams.
        self._spans = [(i, j) for i, j in itertools.product(range(1, self.max_n), repeat=2) if i + j <= self.max_n]
        self.per_step = self._within.shape[1] + len(self._spans)

    def _tables(self):
        spelled = [unicodedata.normalize("NFD", p) for p in self.pieces] if self.jamo else self.pieces
        words = [p[: self.max_piece_chars] for p in spelled]
        grams = [[w[s: s + n] for n in range(1, self.max_n + 1) for s in range(len(w) - n + 1)] for w in words]
        within = np.zeros((len(words), max(1, max(map(len, grams)))), "int32")
        for row, found in enumerate(grams):
            within[row, : len(found)] = [1 + _rolling_hash(g) % self.buckets for g in found]
        # Hashes (not buckets) of each piece's first / last k characters, -1 where too short.
        width = max(1, self.max_n - 1)
        prefix = np.full((len(words), width), -1, "int64")
        suffix = np.full((len(words), width), -1, "int64")
        for row, word in enumerate(words):
            for k in range(1, min(len(word), width) + 1):
                prefix[row, k - 1] = _rolling_hash(word[:k])
                suffix[row, k - 1] = _rolling_hash(word[-k:])
        return within, prefix, suffix

    def call(self, token_ids):
        ids = ops.cast(token_ids, "int32")
        ids = ops.where(ops.logical_and(ids >= 0, ids < len(self.pieces)), ids, 0)  # unknown ids spell nothing
        parts = [ops.take(ops.convert_to_tensor(self._within), ids, axis=0)]  # [B, T, W]
        following = ops.pad(ids[:, 1:], [[0, 0], [0, 1]])  # the last step has no right neighbour
        prefix, suffix = ops.convert_to_tensor(self._prefix), ops.convert_to_tensor(self._suffix)
        word_start = ops.convert_to_tensor(self._word_start)
        for i, j in self._spans:
            left = ops.take(suffix[:, i - 1], ids, axis=0)
            right = ops.take(prefix[:, j - 1], following, axis=0)
            joined = ops.mod(left * (_HASH_BASE ** j % _HASH_MODULUS) + right, _HASH_MODULUS)
            bucket = ops.mod(joined, self.buckets) + 1
            valid = ops.logical_and(left >= 0, right >= 0)
            if self.word_bounded and j > 1:  # only "...▁" may reach into the next word
                valid = ops.logical_and(valid, ops.logical_not(ops.take(word_start, following, axis=0)))
            parts.append(ops.expand_dims(ops.cast(ops.where(valid, bucket, 0), "int32"), -1))
        grams = ops.concatenate(parts, axis=-1)  # [B, T, per_step]
        return ops.reshape(grams, (ops.shape(grams)[0], -1))

    def compute_output_spec(self, token_ids):
        steps = token_ids.shape[1]
        return keras.KerasTensor((token_ids.shape[0], None if steps is None else steps * self.per_step),
                                 dtype="int32")

    def get_config(self):
        return {**super().get_config(), "pieces": self.pieces, "max_n": self.max_n, "buckets": self.buckets,
                "max_piece_chars": self.max_piece_chars, "jamo": self.jamo, "word_bounded": self.word_bounded}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HashedBag(keras.layers.Layer):
    """Embedding bag of hashed ids: sum of the rows of the ids present / sqrt(count).

    ``[B, K]`` ids (0 = none) -> ``[B, dim]``; a row without ids gives zeros. The
    sqrt-n combiner is fastText's and TF's `embedding_lookup_sparse(combiner="sqrtn")`:
    a text's vector keeps its scale whether it is short or long. Pooled in float32.

    Args:
        buckets: ids run 1..buckets (the table has buckets + 1 rows; row 0 is unused).
        dim: width of the embedding and the output.
        id_dropout: in training, the chance of leaving each id out of the bag.
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(self, buckets: int, dim: int, id_dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(id_dropout) < 1.0:
            raise ValueError(f"id_dropout must be in [0, 1), got {id_dropout!r}")
        self.buckets, self.dim, self.id_dropout = int(buckets), int(dim), float(id_dropout)
        self.seed = keras.random.SeedGenerator(0)

    def build(self, ids_shape):
        self.embeddings = self.add_weight(shape=(self.buckets + 1, self.dim), name="embeddings",
                                          initializer=keras.initializers.RandomUniform(-0.05, 0.05))

    def call(self, ids, training=False):
        present = ops.cast(ops.not_equal(ids, 0), "float32")
        if training and self.id_dropout > 0:
            kept = keras.random.uniform(ops.shape(present), seed=self.seed) >= self.id_dropout
            present = present * ops.cast(kept, "float32")
        rows = ops.cast(ops.take(self.embeddings, ids, axis=0), "float32")  # [B, K, dim]
        total = ops.einsum("bk,bkd->bd", present, rows)
        count = ops.sum(present, axis=1, keepdims=True)
        return ops.cast(total / ops.sqrt(ops.maximum(count, 1.0)), self.compute_dtype)

    def compute_output_spec(self, ids, training=False):
        return keras.KerasTensor((ids.shape[0], self.dim), dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "buckets": self.buckets, "dim": self.dim, "id_dropout": self.id_dropout}
