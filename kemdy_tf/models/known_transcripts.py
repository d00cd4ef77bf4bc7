"""Whether a transcript is one the training split holds, inside the model.

The fusion model weighs its text expert by how well the transcript predicted the emotion
on the validation split (`fusion_experts`). That measures reading only where validation
transcripts are new sentences. In a scripted corpus every validation transcript repeats a
training one, so validation measures recall of the script; a new sentence at serving time
(speech recognition, another corpus, or a test split whose sentences say nothing: the
`data.scenarios` "shortcut") would be read with a confidence nothing measured. So when
the validation split holds (almost) no new transcript, `fusion_experts` gives the text
expert a vote only on transcripts the training split holds (`KnownTranscriptMask`), and an
example with a new one is answered as one without a transcript: by the voice.

A transcript is recognised by a fingerprint of its token ids (a sum of the ids times
fixed pseudo-random multipliers per position; pad ids 0 add nothing, so the padded length
does not matter), exact up to collisions of 1 in ~2^40.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

_PACKAGE = "kemdy_tf"
# Positions with their own multiplier; later positions reuse them (transcripts are max_tokens long).
_POSITIONS = 4096
# ids < 2^16 x multipliers < 2^31, summed over <= 4096 positions: < 2^59, exact in int64.
_MULTIPLIERS = np.random.default_rng(2026_12_06).integers(1, 2**31, _POSITIONS, dtype=np.int64)


def fingerprints(token_ids) -> np.ndarray:
    """`[N, T]` token ids (0: padding) -> `[N]` int64 fingerprints, in numpy (as the layer computes them)."""
    ids = np.asarray(token_ids, np.int64)
    return (ids * _MULTIPLIERS[np.arange(ids.shape[1]) % _POSITIONS]).sum(axis=1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class KnownTranscriptMask(keras.layers.Layer):
    """``[B, T]`` token ids -> ``[B, T]`` boolean: the padding mask of a transcript the
    training split holds, all False for any other transcript (so `ExpertProduct` treats
    it as no transcript).

    Args:
        n_known: how many fingerprints it holds (`set_known` fills them; saved as a weight).
        pad_id: the padding id (SentencePiece here: 0).
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(self, n_known: int, pad_id: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(n_known) < 1:
            raise ValueError(f"n_known must be >= 1, got {n_known}")
        self.n_known, self.pad_id = int(n_known), int(pad_id)

    def build(self, ids_shape):
        self.known = self.add_weight(shape=(self.n_known,), name="known", initializer="zeros", dtype="int64",
                                     trainable=False)

    def set_known(self, values) -> None:
        values = np.asarray(values, np.int64).reshape(-1)
        if values.shape != (self.n_known,):
            raise ValueError(f"{self.name} holds {self.n_known} fingerprints, got {values.shape[0]}")
        self.known.assign(values)

    def call(self, token_ids):
        ids = ops.cast(token_ids, "int64")
        positions = ops.mod(ops.arange(ops.shape(ids)[1]), _POSITIONS)
        multipliers = ops.take(ops.convert_to_tensor(_MULTIPLIERS), positions, axis=0)
        fingerprint = ops.sum(ids * multipliers[None, :], axis=1)
        known = ops.any(ops.equal(fingerprint[:, None], self.known[None, :]), axis=1)
        return ops.logical_and(ops.not_equal(token_ids, self.pad_id), known[:, None])

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="bool")

    def get_config(self):
        return {**super().get_config(), "n_known": self.n_known, "pad_id": self.pad_id}
