"""In-graph log-mel: the training features (`kemdy_tf.data.audio.log_mel`) as TensorFlow ops.

The exported SavedModel takes raw waveforms, so the spectrogram is computed inside
the graph, and it must agree with the librosa features the models were trained on.
Each step mirrors `audio.log_mel` (librosa 0.11):

* the clip is cut to the samples its first `max_frames` frames need
  (`audio.samples_for_frames`), like `audio.log_mel`, so `top_db` is relative to the
  loudest *kept* bin;
* `librosa.stft(center=True, pad_mode="constant")`: zero padding of `n_fft // 2` on
  both sides, periodic Hann window, `1 + samples // hop` frames;
* `melspectrogram(power=2.0)`: |STFT|^2 times librosa's own Slaney mel filterbank
  (`audio.mel_filterbank`), held as a constant. The HTK-scale
  `tf.signal.linear_to_mel_weight_matrix` is tens of dB off, so it is not used;
* `power_to_db(ref=1.0, amin=1e-10, top_db=80)`, the floor taken per clip over that
  clip's own valid frames, so padding and the other clips in the batch change nothing.

Samples past `waveform_length` are ignored (zeroed before the STFT), so clips of
different lengths can be batched with anything in their padding.

Example:
    >>> log_mel, frames = waveform_to_log_mel(waveform, lengths, FeatureConfig())
    >>> log_mel.shape  # [batch, longest clip's frames (<= max_frames), n_mels], 0 past each clip
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kemdy_tf.config import FeatureConfig
from kemdy_tf.data import audio

# The recipe implemented below; `check_recipe` refuses any other.
_IMPLEMENTED = {"window": "hann", "center": True, "pad_mode": "constant", "ref": 1.0,
                "mel_scale": "slaney", "mel_norm": "slaney"}


def check_recipe(features: FeatureConfig) -> dict:
    """`audio.log_mel_settings(features)`, after checking this module computes exactly that.

    Raises:
        ValueError: the training features use a setting the in-graph version lacks.
    """
    settings = audio.log_mel_settings(features)
    differ = {k: settings.get(k) for k, v in _IMPLEMENTED.items() if settings.get(k) != v}
    if differ:
        raise ValueError(f"in-graph log-mel implements {_IMPLEMENTED}; the training features use {differ}")
    return settings


def frame_count(num_samples, features: FeatureConfig):
    """Frames of `audio.log_mel` for a clip of `num_samples` samples: min(1 + n // hop, max_frames).

    Works on Python ints, NumPy arrays and tensors alike.
    """
    frames = 1 + num_samples // features.hop_length
    if isinstance(frames, (int, np.integer)):
        return min(int(frames), features.max_frames)
    if isinstance(frames, np.ndarray):
        return np.minimum(frames, features.max_frames)
    return tf.minimum(frames, features.max_frames)


def waveform_to_log_mel(waveform, waveform_length, features: FeatureConfig, whole_window: bool = False):
    """Log-mel spectrograms of a batch of padded mono waveforms.

    Args:
        waveform: float32 [batch, samples] at `features.sample_rate`; anything past a
            clip's length is ignored.
        waveform_length: int [batch], valid samples per clip (clipped to [0, samples]).
        features: the run's feature settings (n_fft, hop_length, n_mels, max_frames).
        whole_window: always return `max_frames` frames (a static shape, which the
            LiteRT export needs), zero past each clip's frames.

    Returns:
        `(log_mel, frames)`: float32 [batch, max(frames) or max_frames, n_mels] in dB,
        zero past each clip's frames; int32 [batch] frames per clip (`frame_count`).
    """
    check_recipe(features)
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    # Samples past this never reach the first max_frames frames (see audio.log_mel).
    needed = audio.samples_for_frames(features.max_frames, features)
    waveform = waveform[:, :needed]
    if whole_window:  # pad to exactly `needed` samples; the reshape makes that width static
        waveform = tf.pad(waveform, [[0, 0], [0, needed - tf.shape(waveform)[1]]])
        waveform = tf.reshape(waveform, [-1, needed])
    samples = tf.shape(waveform)[1]
    length = tf.clip_by_value(tf.cast(waveform_length, tf.int32), 0, samples)
    frames = frame_count(length, features)
    if whole_window:
        kept = features.max_frames
    else:
        kept = tf.maximum(tf.reduce_max(frames), 0)  # 0 for an empty batch
    return _log_mel(waveform, length, frames, kept, features), frames


def bucketed_log_mel(waveform, waveform_length, features: FeatureConfig, bucket: int):
    """`waveform_to_log_mel` with its arithmetic compiled by XLA, one program per bucket.

    The waveform is cut or zero padded to the samples of the first `bucket`-multiple of
    frames that holds every clip (at most `max_frames`), so the compiled program sees
    one input width per bucket; the frames past the longest clip are then dropped again.
    Same values as `waveform_to_log_mel` (XLA's FFT rounds differently: about 1e-5 dB).

    Returns:
        `(log_mel, frames)` as `waveform_to_log_mel`.
    """
    check_recipe(features)
    bucket = int(bucket)
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    waveform = waveform[:, : audio.samples_for_frames(features.max_frames, features)]
    samples = tf.shape(waveform)[1]
    length = tf.clip_by_value(tf.cast(waveform_length, tf.int32), 0, samples)
    frames = frame_count(length, features)
    longest = frame_count(samples, features)
    padded_frames = tf.minimum((longest + bucket - 1) // bucket * bucket, features.max_frames)
    # Samples past these never reach the first padded_frames frames (audio.samples_for_frames).
    width = (padded_frames - 1) * features.hop_length + features.n_fft // 2
    waveform = tf.pad(waveform, [[0, 0], [0, tf.maximum(width - samples, 0)]])[:, :width]
    def compiled(waveform, length, frames):  # every frame of its input (a static count under XLA)
        kept = 1 + (tf.shape(waveform)[1] - features.n_fft // 2) // features.hop_length
        return _log_mel(waveform, length, frames, kept, features)

    log_mel = tf.function(compiled, jit_compile=True)(waveform, tf.minimum(length, width), frames)
    return log_mel[:, : tf.maximum(tf.reduce_max(frames), 0)], frames


def _log_mel(waveform, length, frames, kept, features: FeatureConfig):
    """The log-mel of `waveform` [batch, samples] (clips of `length` samples, `frames`
    frames each), `kept` frames, zero past each clip's."""
    samples = tf.shape(waveform)[1]
    # Zero everything past each clip's end: librosa pads the clip with zeros there.
    inside = tf.range(samples)[tf.newaxis, :] < length[:, tf.newaxis]
    waveform = tf.where(inside, waveform, 0.0)
    half = features.n_fft // 2
    padded = tf.pad(waveform, [[0, 0], [half, half]])
    spectrum = tf.signal.stft(
        padded,
        frame_length=features.n_fft,
        frame_step=features.hop_length,
        fft_length=features.n_fft,
        window_fn=tf.signal.hann_window,  # periodic, like scipy's get_window(fftbins=True)
        pad_end=False,
    )
    power = tf.math.square(tf.abs(spectrum))
    filterbank = np.ascontiguousarray(audio.mel_filterbank(features).T, dtype=np.float32)
    mel = tf.tensordot(power, tf.constant(filterbank), axes=1)
    db = 10.0 * tf.math.log(tf.maximum(mel, audio.AMIN)) / np.log(10.0)  # ref=1.0: no offset
    db = db[:, :kept]
    valid = (tf.range(kept)[tf.newaxis, :] < frames[:, tf.newaxis])[:, :, tf.newaxis]
    # top_db floor relative to each clip's loudest bin over its own kept frames.
    loudest = tf.reduce_max(tf.where(valid, db, -np.inf), axis=[1, 2], keepdims=True)
    db = tf.maximum(db, loudest - audio.TOP_DB)
    return tf.where(valid, db, 0.0)
