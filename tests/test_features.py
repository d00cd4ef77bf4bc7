"""The feature cache (content keys, invalidation, shards, failures) and the tf.data pipeline."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import tensorflow as tf

from kemdy_tf.config import DataConfig, RunConfig
from kemdy_tf.data import audio, features, prosody, splits
from kemdy_tf.models import tokenizer as tok_lib

TEXTS = ["오늘 날씨가 정말 좋네요", "저는 학교에 갑니다", "정말 재미있어요", "아 친구들도"]
LABELS = ["neutral", "happy;neutral", "sad", "angry", "surprise", "neutral"]


def _write_wavs(folder, n_sessions=4, per_speaker=3, seed=0):
    """A small utterance table (contract columns) over real wav files of varied length."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, n_sessions + 1):
        for k, speaker in enumerate((f"User{2 * s - 1:03d}F", f"User{2 * s:03d}M")):
            loudness = 0.01 * (1 + s) * (4 if k else 1)  # every speaker has its own level
            for u in range(per_speaker):
                sid = f"Sess{s:02d}_script01_{speaker}_{u:03d}"
                path = folder / f"{sid}.wav"
                seconds = 0.2 + 0.25 * ((s + u) % 4)
                sf.write(path, (rng.standard_normal(int(16000 * seconds)) * loudness).astype(np.float32), 16000)
                rows.append({
                    "segment_id": sid, "session": f"Sess{s:02d}", "script": "script01",
                    "speaker": speaker, "sex": speaker[-1], "wav_path": str(path), "txt_path": "",
                    "text_raw": TEXTS[u % 4], "text": TEXTS[(s + u) % 4],
                    "labels": LABELS[(s + u + k) % len(LABELS)], "emotion": "",
                    "valence": 1.0 + (s + u) % 5, "arousal": 1.0 + (k + u) % 5,
                    "wav_start": np.nan, "wav_end": np.nan, "rater_emotions": "",
                    "rater_valence": "", "rater_arousal": "", "eda_path": "", "ibi_path": "", "temp_path": "",
                })
    return pd.DataFrame(rows)


def _config(**data):
    cfg = RunConfig()
    cfg.train.batch_size = 4
    cfg.data = dataclasses.replace(DataConfig(), **data)
    return cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("features")
    table = splits.split_table(_write_wavs(folder), DataConfig(), seed=0)
    table.loc[0, "labels"] = "fear"  # no target class
    table = splits.split_table(table.drop(columns="split"), DataConfig(), seed=0)
    cfg = _config()
    cache = features.FeatureCache(folder / "cache", cfg.features)
    assert cache.build(table, workers=1, progress=False) == []
    model = tok_lib.train_sentencepiece(table["text"], folder / "tokenizer.model", 100)
    tokenizer = tok_lib.load_tokenizer(model, cfg.features.max_tokens)
    return {"folder": folder, "table": table, "cfg": cfg, "cache": cache, "tokenizer": tokenizer}


def _epoch(ds):
    """One pass: per-example dicts (numpy), in dataset order."""
    out = []
    for feats, targets in ds:
        for i in range(len(feats["segment_id"])):
            example = {k: v[i].numpy() for k, v in {**feats, **targets}.items()}
            example["segment_id"] = example["segment_id"].decode()
            out.append(example)
    return out


# === Cache ===

def test_cache_folder_changes_with_log_mel_settings_only(data):
    root, cfg = data["cache"].folder.parent, data["cfg"].features
    same = [dataclasses.replace(cfg, max_tokens=16), dataclasses.replace(cfg, vocab_size=50),
            dataclasses.replace(cfg, speaker_norm=True)]
    for other in same:
        assert features.FeatureCache(root, other).folder == data["cache"].folder
    for other in (dataclasses.replace(cfg, n_mels=64), dataclasses.replace(cfg, hop_length=256),
                  dataclasses.replace(cfg, max_frames=100), dataclasses.replace(cfg, sample_rate=8000)):
        changed = features.FeatureCache(root, other)
        assert changed.folder != data["cache"].folder
        assert len(changed) == 0 and len(changed.missing(data["table"])) == len(data["table"])


def test_cached_features_equal_the_log_mel_of_each_wav(data):
    cache, cfg = data["cache"], data["cfg"].features
    index = pd.read_csv(cache.folder / "index.csv")
    assert len(index) == len(data["table"]) == len(cache)
    for path in data["table"]["wav_path"]:
        np.testing.assert_array_equal(cache.read(path), audio.log_mel_file(path, cfg))


def test_second_build_reads_no_wav(data, monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("a cached wav was read again")

    monkeypatch.setattr(audio, "load_audio", no_reading)
    reopened = features.FeatureCache(data["cache"].folder.parent, data["cfg"].features)
    assert reopened.missing(data["table"]) == []
    assert reopened.build(data["table"], workers=1, progress=False) == []
    assert reopened.build(data["table"], workers=2, progress=False) == []  # nothing missing: no pool


def test_a_changed_wav_gets_a_new_entry(tmp_path, monkeypatch):
    table = _write_wavs(tmp_path, n_sessions=1, per_speaker=2)
    cache = features.FeatureCache(tmp_path / "cache", RunConfig().features)
    assert cache.build(table, workers=1, progress=False) == []
    changed = table["wav_path"].iloc[1]
    sf.write(changed, np.ones(4000, np.float32) * 0.3, 16000)
    assert cache.missing(table) == [changed]
    calls = []
    real_load = audio.load_audio
    monkeypatch.setattr(audio, "load_audio", lambda p, sr: calls.append(p) or real_load(p, sr))
    assert cache.build(table, workers=1, progress=False) == []
    assert calls == [changed]
    assert cache.read(changed).shape[0] == 1 + 4000 // 512


def test_unreadable_wavs_are_reported_not_fatal(data, tmp_path):
    table = _write_wavs(tmp_path, n_sessions=1, per_speaker=1)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF but not really a wav file" * 20)
    broken = table.copy()
    broken.loc[0, "wav_path"] = str(garbage)
    broken.loc[1, "wav_path"] = str(tmp_path / "missing.wav")
    broken = pd.concat([broken, table.iloc[[1]]], ignore_index=True)
    cache = features.FeatureCache(tmp_path / "cache", data["cfg"].features)

    failures = cache.build(broken, workers=1, progress=False)

    assert [f[0] for f in failures] == [str(tmp_path / "missing.wav"), str(garbage)]
    assert "cannot open" in failures[0][1] and "cannot decode" in failures[1][1]
    assert cache.has(broken).tolist() == [False, False, True]
    broken["split"] = "val"
    broken["labels"] = "happy"
    with pytest.raises(ValueError, match="no cached features"):
        features.make_dataset(broken, cache, data["tokenizer"], data["cfg"], training=False)
    usable = broken[cache.has(broken)]
    assert features.dataset_size(usable, data["cfg"]) == 1
    assert len(_epoch(features.make_dataset(usable, cache, data["tokenizer"], data["cfg"],
                                            training=False, with_ids=True))) == 1


def test_shards_hold_at_most_shard_size_files(tmp_path, monkeypatch):
    monkeypatch.setattr(features, "SHARD_SIZE", 2)
    table = _write_wavs(tmp_path, n_sessions=1, per_speaker=3)[:5]
    cache = features.FeatureCache(tmp_path / "cache", RunConfig().features)
    assert cache.build(table, workers=1, progress=False) == []
    shards = sorted(p for p in cache.folder.iterdir() if p.is_dir())
    assert [len(list(p.glob("*.f32"))) for p in shards] == [2, 2, 1]


@pytest.mark.slow  # two spawned workers import librosa/scipy: ~10 s on 2 cores
def test_parallel_build_in_spawned_workers_matches(data, tmp_path, monkeypatch):
    monkeypatch.setattr(features, "MIN_CLIPS_PER_PROCESS_POOL", 0)  # a pool even for 6 clips
    table = data["table"].iloc[:6]
    cache = features.FeatureCache(tmp_path / "cache", data["cfg"].features)
    assert cache.build(table, workers=2, progress=False) == []
    for path in table["wav_path"]:
        # workers run one BLAS thread: sums may round differently, by far less than 1e-3 dB
        np.testing.assert_allclose(cache.read(path), data["cache"].read(path), atol=1e-3, rtol=0)


# === Pipeline ===

def test_batches_have_the_contract_shapes_masks_and_padding(data):
    cache, cfg, tokenizer, table = data["cache"], data["cfg"], data["tokenizer"], data["table"]
    ds = features.make_dataset(table, cache, tokenizer, cfg, training=False, with_ids=True, split="val")
    spec_features, spec_targets = ds.element_spec
    assert spec_features["log_mel"].shape.as_list() == [None, None, 128]
    assert spec_features["token_ids"].shape.as_list() == [None, 64]
    assert spec_features["token_ids"].dtype == tf.int32 and spec_features["frame_mask"].dtype == tf.bool
    assert spec_targets["emotion"].shape.as_list() == [None] and spec_targets["emotion"].dtype == tf.int32
    assert spec_targets["arousal"].shape.as_list() == [None, 1]

    rows = table.set_index("segment_id")
    seen = []
    for feats, targets in ds:
        n_frames = feats["log_mel"].shape[1]
        assert n_frames == max(cache.read(rows.loc[s.decode(), "wav_path"]).shape[0]
                               for s in feats["segment_id"].numpy())
        for i, sid in enumerate(feats["segment_id"].numpy()):
            row = rows.loc[sid.decode()]
            cached = cache.read(row["wav_path"])
            real = cached.shape[0]
            mask = feats["frame_mask"][i].numpy()
            assert mask[:real].all() and not mask[real:].any()
            np.testing.assert_array_equal(feats["log_mel"][i, :real].numpy(), cached)
            assert np.all(feats["log_mel"][i, real:].numpy() == 0)
            np.testing.assert_array_equal(feats["token_ids"][i].numpy(), np.asarray(tokenizer(row["text"])))
            assert targets["arousal"][i, 0] == row["arousal"] and targets["valence"][i, 0] == row["valence"]
            assert targets["emotion"][i] == cfg.data.classes.index(row["emotion"])
            seen.append(sid.decode())
    assert sorted(seen) == sorted(table.loc[table["split"] == "val", "segment_id"])


def test_max_frames_bounds_the_batches(data, tmp_path):
    cfg = _config()
    cfg.features.max_frames = 8
    cache = features.FeatureCache(tmp_path / "cache", cfg.features)
    cache.build(data["table"], workers=1, progress=False)
    longest = max(f["log_mel"].shape[1] for f, _ in features.make_dataset(
        data["table"], cache, data["tokenizer"], cfg, training=False, split="train"))
    assert longest == 8


def test_excluded_and_unlabelled_rows_are_left_out(data):
    table, cfg = data["table"], data["cfg"]
    assert table.loc[0, "split"] == "excluded"
    ids = [e["segment_id"] for e in _epoch(features.make_dataset(
        table, data["cache"], data["tokenizer"], cfg, training=False, with_ids=True))]
    assert table.loc[0, "segment_id"] not in ids
    assert len(ids) == features.dataset_size(table, cfg) == len(table) - 1
    for split in ("train", "val", "test"):
        assert features.dataset_size(table, cfg, split) == (table["split"] == split).sum()


def test_shuffling_only_when_training(data):
    args = (data["table"], data["cache"], data["tokenizer"], data["cfg"])
    val = features.make_dataset(*args, training=False, with_ids=True, split="val")
    order = [e["segment_id"] for e in _epoch(val)]
    assert order == data["table"].loc[data["table"]["split"] == "val", "segment_id"].tolist()
    assert [e["segment_id"] for e in _epoch(val)] == order

    train = features.make_dataset(*args, training=True, with_ids=True, split="train")
    first, second = ([e["segment_id"] for e in _epoch(train)] for _ in range(2))
    assert sorted(first) == sorted(second) and first != second
    unshuffled = features.make_dataset(*args, training=True, with_ids=True, split="train", shuffle=False)
    assert [e["segment_id"] for e in _epoch(unshuffled)] == \
        data["table"].loc[data["table"]["split"] == "train", "segment_id"].tolist()


def test_frequency_masking_only_on_the_training_split(data):
    cfg = _config(freq_mask_prob=1.0, freq_mask_param=20)
    args = (data["table"], data["cache"], data["tokenizer"], cfg)
    val = features.make_dataset(*args, training=False, with_ids=True, split="val")
    for a, b in zip(_epoch(val), _epoch(val)):
        np.testing.assert_array_equal(a["log_mel"], b["log_mel"])

    train = features.make_dataset(*args, training=True, with_ids=True, split="train", shuffle=False)
    epochs = [_epoch(train) for _ in range(2)]
    widths = []
    for a, b in zip(*epochs):
        cached = data["cache"].read(data["table"].set_index("segment_id").loc[a["segment_id"], "wav_path"])
        real = a["log_mel"][: cached.shape[0]]
        bins = np.flatnonzero(np.any(real != cached, axis=0))
        widths.append(len(bins))
        if len(bins):
            assert np.all(np.diff(bins) == 1) and len(bins) <= 20
            np.testing.assert_allclose(real[:, bins], cached.mean(), rtol=1e-5)
    assert max(widths) > 0
    assert any(not np.array_equal(a["log_mel"], b["log_mel"]) for a, b in zip(*epochs))
    again = features.make_dataset(*args, training=True, with_ids=True, split="train", shuffle=False)
    for a, b in zip(epochs[0], _epoch(again)):
        np.testing.assert_array_equal(a["log_mel"], b["log_mel"])  # seeded by train.seed



def test_frequency_warp_only_on_the_training_split_and_masks_draw_as_before(data):
    base = _config(freq_mask_prob=1.0, freq_mask_param=20)
    warped = _config(freq_mask_prob=1.0, freq_mask_param=20, freq_warp=0.15)
    make = lambda cfg, **kw: features.make_dataset(data["table"], data["cache"], data["tokenizer"], cfg,  # noqa: E731
                                                   with_ids=True, **kw)
    for a, b in zip(_epoch(make(base, training=False, split="val")), _epoch(make(warped, training=False, split="val"))):
        np.testing.assert_array_equal(a["log_mel"], b["log_mel"])
    plain = _epoch(make(base, training=True, split="train", shuffle=False))
    both = _epoch(make(warped, training=True, split="train", shuffle=False))
    assert any(not np.array_equal(a["log_mel"], b["log_mel"]) for a, b in zip(plain, both))
    only_warp = _epoch(make(_config(freq_mask_prob=0.0, freq_warp=0.15), training=True, split="train",
                            shuffle=False))
    masked = 0
    for mask_only, warp_only, warp_and_mask in zip(plain, only_warp, both):
        # the band the mask set is the same with the warp on as without it: its draws are unchanged
        cached = data["cache"].read(data["table"].set_index("segment_id").loc[mask_only["segment_id"], "wav_path"])
        n = cached.shape[0]
        band = np.flatnonzero(np.any(mask_only["log_mel"][:n] != cached, axis=0))
        np.testing.assert_array_equal(
            np.flatnonzero(np.any(warp_and_mask["log_mel"][:n] != warp_only["log_mel"][:n], axis=0)), band)
        masked += len(band) > 0
    assert masked > 0


def test_no_test_utterance_or_copy_of_one_reaches_training(data):
    table, cfg = data["table"], data["cfg"]
    table = table.assign(augmented_from="")
    train_rows = table[table["split"] == "train"]
    copies = train_rows.assign(segment_id=train_rows["segment_id"] + "#aug1",
                               augmented_from=train_rows["segment_id"], text="학교에 저는 갑니다")
    full = pd.concat([table, copies], ignore_index=True)
    args = (data["cache"], data["tokenizer"], cfg)

    seen = {e["segment_id"] for e in _epoch(features.make_dataset(full, *args, training=True,
                                                                  with_ids=True, split="train"))}

    held_out = set(full.loc[full["split"].isin(["val", "test"]), "segment_id"])
    assert seen and not seen & held_out
    assert not {s for s in seen if s.split("#")[0] in held_out}
    assert set(copies["segment_id"]) <= seen
    assert seen == set(full.loc[full["split"] == "train", "segment_id"])

    test_row = table[table["split"] == "test"].iloc[[0]]
    leak = test_row.assign(segment_id=test_row["segment_id"] + "#aug1",
                           augmented_from=test_row["segment_id"], split="train")
    with pytest.raises(ValueError, match="leak outside the training split"):
        features.make_dataset(pd.concat([full, leak]), *args, training=True, split="train")
    with pytest.raises(ValueError, match="outside the training split"):
        features.make_dataset(full, *args, training=True)


def test_speaker_normalisation_uses_each_speakers_own_frames(data):
    cfg = _config()
    cfg.features.speaker_norm = True
    table = data["table"]
    ds = features.make_dataset(table, data["cache"], data["tokenizer"], cfg, training=False,
                               with_ids=True, split="test")
    speaker = table.set_index("segment_id")["speaker"]
    frames: dict[str, list] = {}
    for e in _epoch(ds):
        frames.setdefault(speaker[e["segment_id"]], []).append(e["log_mel"][e["frame_mask"]])
    assert len(frames) == 2
    test_rows = table[table["split"] == "test"]
    raw_means = []
    for name, chunks in frames.items():
        stacked = np.concatenate(chunks)
        np.testing.assert_allclose(stacked.mean(axis=0), 0, atol=1e-3)
        np.testing.assert_allclose(stacked.std(axis=0), 1, atol=1e-2)
        paths = test_rows.loc[test_rows["speaker"] == name, "wav_path"]
        raw_means.append(np.concatenate([data["cache"].read(p) for p in paths]).mean())
    # The speakers' raw levels differ by several dB; pooled statistics could not zero both.
    assert abs(raw_means[0] - raw_means[1]) > 3


def test_speaker_functional_statistics_come_from_each_speakers_own_clips(data):
    """`fusion.functionals_speaker_norm`: every example carries its speaker's mean and std
    of the utterance functionals of the (speaker-normalised) clips it is fed."""
    cfg = _config()
    cfg.features.speaker_norm = True
    cfg.fusion.functionals = cfg.fusion.functionals_speaker_norm = True
    table = data["table"]
    ds = features.make_dataset(table, data["cache"], data["tokenizer"], cfg, training=False,
                               with_ids=True, split="test")
    speaker = table.set_index("segment_id")["speaker"]
    functionals: dict[str, list] = {}
    stats: dict[str, np.ndarray] = {}
    for e in _epoch(ds):
        name = speaker[e["segment_id"]]
        clip = audio.utterance_functionals(e["log_mel"][e["frame_mask"]], cfg.fusion.functional_cepstra)
        functionals.setdefault(name, []).append(clip)
        assert e["speaker_functionals"].shape == (2, clip.shape[0])
        if name in stats:  # one value per speaker
            np.testing.assert_array_equal(e["speaker_functionals"], stats[name])
        stats[name] = e["speaker_functionals"]
    assert len(stats) == 2
    for name, rows in functionals.items():
        rows = np.stack(rows)
        np.testing.assert_allclose(stats[name][0], rows.mean(axis=0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(stats[name][1], np.maximum(rows.std(axis=0), 1e-2), rtol=1e-3, atol=1e-4)
    cfg.fusion.functionals_speaker_norm = False
    (first, _), *_ = features.make_dataset(table, data["cache"], data["tokenizer"], cfg, training=False,
                                           split="test").take(1)
    assert "speaker_functionals" not in first


def test_pitch_statistics_are_tracked_once_and_read_beside_the_functionals(data, monkeypatch, capsys):
    """`fusion.pitch`: each example carries its wav's `prosody` statistics, cached beside the
    log-mels; the speaker statistics of the functionals then cover them too."""
    cfg = _config()
    cfg.fusion.functionals = cfg.fusion.pitch = cfg.fusion.functionals_speaker_norm = True
    table, cache = data["table"], data["cache"]
    ds = features.make_dataset(table, cache, data["tokenizer"], cfg, training=False, with_ids=True, split="test")
    assert "pitch tracks: " in capsys.readouterr().err  # a long first tracking says how far it is
    wav = table.set_index("segment_id")["wav_path"]
    examples = _epoch(ds)
    for e in examples:
        expected = prosody.clip_pitch_statistics(wav[e["segment_id"]], cfg.features)
        np.testing.assert_allclose(e["pitch_statistics"], expected, rtol=1e-6)
        width = audio.utterance_functionals(e["log_mel"][e["frame_mask"]], cfg.fusion.functional_cepstra).size
        assert e["speaker_functionals"].shape == (2, width + len(prosody.PITCH_STATISTICS))
    # The speaker statistics' last columns are the mean and std of that speaker's pitch statistics.
    speaker = table.set_index("segment_id")["speaker"]
    for name in {speaker[e["segment_id"]] for e in examples}:
        mine = [e for e in examples if speaker[e["segment_id"]] == name]
        pitch = np.stack([e["pitch_statistics"] for e in mine])
        np.testing.assert_allclose(mine[0]["speaker_functionals"][0, width:], pitch.mean(axis=0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(mine[0]["speaker_functionals"][1, width:], np.maximum(pitch.std(axis=0), 1e-2),
                                   rtol=1e-3, atol=1e-4)
    # Tracked once: a second pipeline reads the stored values and opens no wav.
    monkeypatch.setattr(prosody, "clip_pitch_statistics", lambda *a: pytest.fail("pitch tracked again"))
    again = _epoch(features.make_dataset(table, cache, data["tokenizer"], cfg, training=False, with_ids=True,
                                         split="test"))
    for first, second in zip(examples, again):
        np.testing.assert_array_equal(first["pitch_statistics"], second["pitch_statistics"])
    cfg.fusion.pitch = False
    (plain, _), *_ = features.make_dataset(table, cache, data["tokenizer"], cfg, training=False,
                                           split="test").take(1)
    assert "pitch_statistics" not in plain


def test_tokenizer_length_must_match_max_tokens(data, tmp_path):
    model = tok_lib.train_sentencepiece(TEXTS, tmp_path / "t.model", 50)
    with pytest.raises(ValueError, match="max_tokens is 64"):
        features.make_dataset(data["table"], data["cache"], tok_lib.load_tokenizer(model, 32),
                              data["cfg"], training=False, split="val")
