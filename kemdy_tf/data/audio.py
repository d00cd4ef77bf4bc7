"""Audio to model input: loading, log-mel, frequency masking, speaker normalisation.

The log-mel recipe is librosa's, with its defaults except where the seed fixes a value:

    power_to_db(melspectrogram(y, sr=16000, n_fft=2048, hop_length=512, n_mels=128),
                ref=1.0, amin=1e-10, top_db=80.0)[:max_frames]

`melspectrogram` frames with `center=True` and, in librosa 0.11, `pad_mode="constant"`
(zeros: the first frame is centred on sample 0 and half of it is silence). `ref=1.0`
gives absolute dB, so a clip's features never depend on other clips: the exported
model recomputes them in-graph from the waveform alone (see `log_mel_settings`).
`top_db=80` clips every bin to at most 80 dB below the clip's loudest kept bin.

This module imports neither TensorFlow nor Keras at load time, so the feature
cache's worker processes (spawned, see features.py) start in a fraction of a
second; `tf_frequency_mask` imports TensorFlow when it is called.
"""

from __future__ import annotations

import os
import struct
import typing
import warnings

import librosa
import numpy as np
import scipy.fft

from kemdy_tf.config import FeatureConfig

# power_to_db settings, shared with the in-graph log-mel of the exported model.
REF = 1.0
AMIN = 1e-10
TOP_DB = 80.0
# librosa's framing defaults (0.11), written out so a change in librosa cannot pass unseen.
CENTER = True
PAD_MODE = "constant"
WINDOW = "hann"
# Speaker normalisation never divides by less than this (dB): bins that are constant
# for a speaker (e.g. clipped to the top_db floor) stay at 0 instead of exploding.
MIN_STD = 1e-3


class AudioError(Exception):
    """An audio file that cannot become features, with the reason.

    Attributes:
        path: the file.
        reason: what is wrong with it, in words.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        # args = (path, reason) so the error survives pickling out of a worker process.
        super().__init__(str(path), reason)
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


# === Loading ===

def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Any audio file librosa reads, as mono float32 at `sample_rate`.

    Stereo is averaged to mono and other rates are resampled (librosa's default,
    soxr high quality).

    Args:
        path: wav/flac/ogg/... file.
        sample_rate: output rate in Hz.

    Returns:
        1-D float32 array of samples.

    Raises:
        AudioError: the file is missing, unreadable, empty or holds non-finite samples.
            An undecodable file's reason says what the file looks like (size, first
            bytes: empty, not a RIFF/WAV, truncated header) and which formats are read.
    """
    if not os.path.isfile(path):
        raise AudioError(path, "file not found")
    wave = _read_as_is(path, sample_rate)
    if wave is not None:
        return wave
    try:
        with warnings.catch_warnings():
            # librosa warns before falling back to audioread; the failure, if any, is ours to report.
            warnings.simplefilter("ignore")
            wave, _ = librosa.load(path, sr=sample_rate, mono=True, dtype=np.float32)
    except Exception as error:  # soundfile, audioread and resampler errors all mean "unreadable"
        detail = str(error).strip().splitlines()
        cause = f"{type(error).__name__}: {detail[0]}" if detail else type(error).__name__
        raise AudioError(path, f"cannot decode audio: {describe_file(path)}; readable formats: "
                               f"{supported_formats()} (decoder said {cause})") from error
    if wave.size == 0:
        raise AudioError(path, "no samples (empty audio)")
    if not np.all(np.isfinite(wave)):
        raise AudioError(path, "contains NaN or infinite samples")
    return wave


def _read_as_is(path, sample_rate: int) -> np.ndarray | None:
    """A mono file already at `sample_rate`, read by soundfile alone: the samples librosa.load
    returns for it, without its first call's seconds of lazy imports and compilation (paid per
    process: predict.py, each bulk worker). None for anything else or any doubt (librosa decides)."""
    import soundfile

    try:
        with soundfile.SoundFile(path) as handle:
            if handle.samplerate != sample_rate or handle.channels != 1:
                return None
            wave = handle.read(dtype="float32")
    except Exception:  # not a soundfile format, damaged, ...: librosa's decoders and messages
        return None
    return wave if wave.size and np.all(np.isfinite(wave)) else None


# === What a file looks like (for error messages and warnings) ===

_WAV_HEADER_BYTES = 44  # RIFF + fmt + data chunk headers of a plain PCM WAV


def sniff_format(head: bytes) -> str | None:
    """The container a file's first bytes announce ("wav", "flac", "ogg", "mp3"), or None."""
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def supported_formats() -> str:
    """The formats `load_audio` reads, in words (libsndfile's list, plus audioread's fallback)."""
    import soundfile

    main = ("WAV", "FLAC", "OGG", "MP3", "AIFF", "AU", "CAF", "W64", "RF64")
    known = [name for name in main if name in soundfile.available_formats()]
    return f"{', '.join(known)} (libsndfile); others (m4a, aac, wma, ...) only where ffmpeg is installed"


def describe_file(path: str | os.PathLike) -> str:
    """What an audio file looks like, for an error message: size, first bytes, and a diagnosis.

        >>> describe_file("empty.wav")  # doctest: +SKIP
        'empty file (0 bytes)'
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if size == 0:
        return "empty file (0 bytes)"
    shown = f"{size:,} bytes, starting {head[:12]!r}"
    kind = sniff_format(head)
    if head[:4] in (b"RIFF", b"RF64") and kind != "wav":
        return f"a RIFF file that is not WAVE ({shown})"
    if kind == "wav":
        if size < _WAV_HEADER_BYTES:
            return f"truncated WAV header ({shown}; a WAV header alone needs {_WAV_HEADER_BYTES})"
        info = wav_header(path)
        if info is None or "data_bytes" not in info:
            return f"WAV header without a readable fmt/data chunk: damaged or truncated ({shown})"
        return f"a WAV file that the decoder refuses ({shown})"
    if kind is not None:
        return f"looks like {kind.upper()} but does not decode: damaged or truncated? ({shown})"
    return f"not audio: no RIFF/WAV, FLAC, Ogg or MP3 header ({shown})"


def wav_header(path: str | os.PathLike) -> dict | None:
    """What a WAV file's header declares, without decoding; None when it is not a RIFF WAV.

    Returns:
        `{"channels", "sample_rate", "block_align", "data_bytes" (declared),
        "data_available" (bytes actually in the file after the data chunk header)}`;
        the data keys are absent when no data chunk header is found.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            info: dict = {}
            while True:
                chunk = handle.read(8)
                if len(chunk) < 8:
                    return info
                name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if name == b"fmt ":
                    fmt = handle.read(min(length, 16))
                    if len(fmt) < 16:
                        return info
                    _, channels, rate, _, align = struct.unpack("<HHIIH", fmt[:14])
                    info.update(channels=channels, sample_rate=rate, block_align=align)
                    handle.seek(length - 16 + (length & 1), os.SEEK_CUR)
                elif name == b"data":
                    info.update(data_bytes=length, data_available=size - handle.tell())
                    return info
                else:
                    handle.seek(length + (length & 1), os.SEEK_CUR)
    except OSError:
        return None


def truncation(path: str | os.PathLike) -> str | None:
    """A warning when a WAV's header promises more audio than the file holds, else None.

    Streaming writers leave the data size at 0 or 0xFFFFFFFF ("until the end"): not
    truncation. Other formats are not checked (their decoders report damage).
    """
    info = wav_header(path)
    if not info or "data_bytes" not in info or not info.get("block_align") or not info.get("sample_rate"):
        return None
    declared, available = info["data_bytes"], info["data_available"]
    if declared in (0, 0xFFFFFFFF) or available >= declared:
        return None
    rate, align = info["sample_rate"], info["block_align"]
    return (f"truncated file: its header promises {declared / align / rate:.2f} s of audio but it holds "
            f"{max(available, 0) / align / rate:.3f} s (an interrupted copy or recording?)")


# === Log-mel ===

def log_mel_settings(cfg: FeatureConfig) -> dict:
    """Every value that determines `log_mel`'s output: the cache key and the export's recipe."""
    return {
        "sample_rate": cfg.sample_rate, "n_fft": cfg.n_fft, "hop_length": cfg.hop_length,
        "n_mels": cfg.n_mels, "max_frames": cfg.max_frames, "window": WINDOW,
        "center": CENTER, "pad_mode": PAD_MODE, "ref": REF, "amin": AMIN, "top_db": TOP_DB,
        "mel_scale": "slaney", "mel_norm": "slaney",  # librosa.filters.mel defaults
    }


def samples_for_frames(frames: int, cfg: FeatureConfig) -> int:
    """Samples that fully determine the first `frames` centred frames.

    Frame t is centred on sample t * hop and reaches n_fft // 2 samples to the right;
    anything later never enters those frames.
    """
    return (frames - 1) * cfg.hop_length + cfg.n_fft // 2


def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """librosa's mel filterbank [n_mels, 1 + n_fft // 2] (for an in-graph log-mel)."""
    return librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels)


def log_mel(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """librosa log-mel of one clip, [frames <= max_frames, n_mels] float32 (dB).

    Equal to librosa's reference `power_to_db(melspectrogram(...), ref=1.0)` for
    clips of at most max_frames frames. Longer clips are cut to the samples the
    first max_frames frames need before the STFT (the frames are the same, the work
    is not), so `top_db` is relative to the loudest kept bin.

    Args:
        wave: 1-D float samples at cfg.sample_rate.
        cfg: feature settings.

    Returns:
        float32 array [frames, n_mels], time first.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"log_mel needs a non-empty 1-D wave, got shape {wave.shape}")
    wave = wave[: samples_for_frames(cfg.max_frames, cfg)]
    with warnings.catch_warnings():
        # Clips shorter than n_fft are fine with centred, zero-padded frames.
        warnings.filterwarnings("ignore", message="n_fft=.* is too large")
        power = librosa.feature.melspectrogram(
            y=wave, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
            n_mels=cfg.n_mels, window=WINDOW, center=CENTER, pad_mode=PAD_MODE,
        )[:, : cfg.max_frames]
    db = librosa.power_to_db(power, ref=REF, amin=AMIN, top_db=TOP_DB)
    return np.ascontiguousarray(db.T, dtype=np.float32)


def log_mel_file(path: str | os.PathLike, cfg: FeatureConfig) -> np.ndarray:
    """`log_mel(load_audio(path))`; every failure is an AudioError naming the file.

    A top-level function so the feature cache can run it in spawned worker processes.
    """
    wave = load_audio(path, cfg.sample_rate)
    try:
        return log_mel(wave, cfg)
    except Exception as error:
        raise AudioError(path, f"log-mel failed ({type(error).__name__}: {error})") from error


# === Frequency masking (SpecAugment's F mask) ===
# The masked band is set to the clip's mean log-mel: after speaker normalisation
# that is ~0, SpecAugment's choice; on absolute dB a minimum (the top_db floor)
# would paint an unnaturally silent band that no real clip has.

def frequency_mask(log_mel: np.ndarray, max_width: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of `log_mel` [frames, n_mels] with one random band of mel bins set to its mean.

    The width is uniform in [0, max_width] (0 = no mask), the first bin uniform among
    the positions where the band fits; every frame is masked on the same bins.

    Args:
        log_mel: [frames, n_mels] features of one clip (no padding).
        max_width: widest band, in mel bins (capped at n_mels).
        rng: numpy random generator.
    """
    out = np.array(log_mel, dtype=np.float32, copy=True)
    n_mels = out.shape[1]
    width = int(rng.integers(0, min(max_width, n_mels) + 1))
    start = int(rng.integers(0, n_mels - width + 1))
    out[:, start : start + width] = log_mel.mean()
    return out


def tf_frequency_mask(log_mel, max_width: int, seed=None, probability: float = 1.0):
    """TensorFlow `frequency_mask` for tf.data: same distribution, applied with `probability`.

    Args:
        log_mel: float32 tensor [frames, n_mels] of one clip (no padding).
        max_width: widest band, in mel bins.
        seed: shape-[2] integer tensor for stateless random ops (reproducible
            per element), or None for TensorFlow's global random state.
        probability: chance that the clip is masked at all.

    Returns:
        The masked tensor, same shape and dtype.
    """
    import tensorflow as tf  # here, not at module top: see the module docstring

    n_mels = tf.shape(log_mel)[1]
    max_width = tf.minimum(tf.constant(max_width, tf.int32), n_mels)
    if seed is None:
        apply = tf.random.uniform([]) < probability
        width = tf.random.uniform([], 0, max_width + 1, dtype=tf.int32)
        start = tf.random.uniform([], 0, n_mels - width + 1, dtype=tf.int32)
    else:
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
        apply = tf.random.stateless_uniform([], seeds[0]) < probability
        width = tf.random.stateless_uniform([], seeds[1], 0, max_width + 1, dtype=tf.int32)
        start = tf.random.stateless_uniform([], seeds[2], 0, n_mels - width + 1, dtype=tf.int32)
    bins = tf.range(n_mels)
    band = (bins >= start) & (bins < start + width) & apply
    return tf.where(band[tf.newaxis, :], tf.reduce_mean(log_mel), log_mel)


def tf_frequency_warp(log_mel, max_warp: float, seed):
    """`log_mel` [frames, n_mels] with its mel axis stretched by a random factor in
    [1 - max_warp, 1 + max_warp] (bin k reads bin k / factor, linearly interpolated, the
    top bin repeated past the edge): the same utterance as from a longer or shorter vocal
    tract, the way vocal tract length perturbation (Jaitly & Hinton 2013) makes new
    speakers from old ones. `seed`: shape-[2] integer tensor for stateless random ops."""
    import tensorflow as tf

    n_mels = tf.shape(log_mel)[1]
    factor = tf.random.stateless_uniform([], tf.cast(seed, tf.int64), 1.0 - max_warp, 1.0 + max_warp)
    source = tf.minimum(tf.cast(tf.range(n_mels), tf.float32) / factor, tf.cast(n_mels - 1, tf.float32))
    low = tf.cast(tf.floor(source), tf.int32)
    high = tf.minimum(low + 1, n_mels - 1)
    weight = source - tf.cast(low, tf.float32)
    return tf.gather(log_mel, low, axis=1) * (1.0 - weight) + tf.gather(log_mel, high, axis=1) * weight


# === Speaker normalisation ===

def speaker_stats(
    items: typing.Iterable[tuple[str, np.ndarray]], min_std: float = MIN_STD
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-speaker mean and standard deviation of each mel bin, over that speaker's frames.

    Streams: only running sums per speaker are held, never the features. No label is
    looked at, so it is fair to compute this for test speakers from their own audio.

    Args:
        items: (speaker, log_mel [frames, n_mels]) pairs, one per utterance.
        min_std: floor of the standard deviation.

    Returns:
        {speaker: (mean [n_mels], std [n_mels])}, float32.
    """
    sums: dict[str, list] = {}
    for speaker, features in items:
        features = np.asarray(features, dtype=np.float64)
        acc = sums.setdefault(speaker, [0, 0.0, 0.0])
        acc[0] += features.shape[0]
        acc[1] = acc[1] + features.sum(axis=0)
        acc[2] = acc[2] + np.square(features).sum(axis=0)
    stats = {}
    for speaker, (count, total, total_sq) in sums.items():
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
        stats[speaker] = (mean.astype(np.float32), np.maximum(std, min_std).astype(np.float32))
    return stats


def utterance_functionals(log_mel: np.ndarray, cepstra: int = 0, epsilon: float = 1e-6) -> np.ndarray:
    """Per-band mean, std, std of the frame difference, max and min: `[frames, n]` -> `[5 (n + cepstra)]`.

    The numpy twin of `models.layers.UtteranceFunctionals` on one clip's real frames
    (same order, same `sqrt(variance + epsilon) - sqrt(epsilon)` deviation); with
    `cepstra` > 0 the bands are followed by each frame's first `cepstra` orthonormal
    DCT-II coefficients, as there.
    """
    frames = np.asarray(log_mel, np.float64)
    if cepstra:
        frames = np.concatenate([frames, scipy.fft.dct(frames, axis=1, norm="ortho")[:, :cepstra]], axis=1)
    if frames.shape[0] == 0:
        return np.zeros(5 * frames.shape[1], np.float32)

    def std(values):
        if values.shape[0] == 0:
            return np.zeros(frames.shape[1])
        return np.sqrt(values.var(axis=0) + epsilon) - epsilon ** 0.5

    return np.concatenate([frames.mean(axis=0), std(frames), std(np.diff(frames, axis=0)),
                           frames.max(axis=0), frames.min(axis=0)]).astype(np.float32)


def functional_stats(
    items: typing.Iterable[tuple[str, np.ndarray]], min_std: float = 1e-2
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-speaker mean and standard deviation of the utterance functionals, over clips.

    Args:
        items: (speaker, functionals [F]) pairs, one per clip (`utterance_functionals`).
        min_std: floor of the standard deviation.

    Returns:
        {speaker: (mean [F], std [F])}, float32. A speaker with a single clip gets
        (0, 1): their functionals are left as they are rather than zeroed.
    """
    grouped: dict[str, list] = {}
    for speaker, values in items:
        grouped.setdefault(speaker, []).append(np.asarray(values, np.float64))
    stats = {}
    for speaker, rows in grouped.items():
        rows = np.stack(rows)
        if len(rows) < 2:
            stats[speaker] = (np.zeros(rows.shape[1], np.float32), np.ones(rows.shape[1], np.float32))
        else:
            stats[speaker] = (rows.mean(axis=0).astype(np.float32),
                              np.maximum(rows.std(axis=0), min_std).astype(np.float32))
    return stats


def normalise(log_mel: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(log_mel - mean) / std per mel bin, float32."""
    return ((np.asarray(log_mel, np.float32) - mean) / std).astype(np.float32)


def single_threaded_blas() -> None:
    """Worker-process initializer: one BLAS thread per worker.

    Two workers on two cores each running two OpenBLAS threads fight over the cores;
    bench/run.py measured the cache build 1.9-2x faster with one thread per worker.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
