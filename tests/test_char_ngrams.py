"""The text classifier's wide path: hashed character n-grams read from token ids."""

from __future__ import annotations

import collections
import copy
from pathlib import Path

import keras
import numpy as np
import pytest
import sentencepiece as spm

from kemdy_tf.config import AudioEncoderConfig, FeatureConfig, FusionConfig, TextEncoderConfig
from kemdy_tf.models.audio_encoder import build_audio_backbone
from kemdy_tf.models.char_ngrams import HashedBag, PieceCharNgrams, _rolling_hash, ngram_pieces
from kemdy_tf.models.fusion import build_fusion_model
from kemdy_tf.models.text_encoder import build_text_backbone

PIECES = ["", "▁좋", "은", "▁영화", "ㅋㅋ", "다"]


def expected_ngrams(pieces, max_n, buckets):
    """Every n-gram of the joined text that lies in at most two adjacent pieces, as buckets."""
    text = "".join(pieces)
    starts = np.cumsum([0] + [len(p) for p in pieces])
    piece_of = np.searchsorted(starts, np.arange(len(text)), side="right") - 1
    found = collections.Counter()
    for n in range(1, max_n + 1):
        for s in range(len(text) - n + 1):
            if piece_of[s + n - 1] - piece_of[s] <= 1:
                found[1 + _rolling_hash(text[s: s + n]) % buckets] += 1
    return found


def test_word_bounded_ngrams_stop_at_the_next_word_but_its_space():
    """word_bounded=True (scikit-learn's char_wb): an n-gram may end with the next word's
    "▁" but not reach past it."""
    layer = PieceCharNgrams(PIECES, max_n=3, buckets=997, word_bounded=True)
    used = [1, 2, 3, 4, 5]
    grams = np.asarray(layer(np.array([used], "int32")))[0]
    text = "".join(PIECES[i] for i in used)  # ▁좋은▁영화ㅋㅋ다
    starts = np.cumsum([0] + [len(PIECES[i]) for i in used])
    piece_of = np.searchsorted(starts, np.arange(len(text)), side="right") - 1
    wanted = collections.Counter()
    for n in range(1, 4):
        for s in range(len(text) - n + 1):
            gram = text[s: s + n]
            if piece_of[s + n - 1] - piece_of[s] <= 1 and "▁" not in gram[1:-1]:  # ▁ first or last only
                wanted[1 + _rolling_hash(gram) % 997] += 1
    assert collections.Counter(grams[grams > 0].tolist()) == wanted
    spanning = PieceCharNgrams(PIECES, max_n=3, buckets=997)
    assert (np.asarray(spanning(np.array([used], "int32"))) > 0).sum() == (grams > 0).sum() + 1  # 은▁영


def test_jamo_ngrams_are_those_of_the_decomposed_text():
    """jamo=True: the same ids give the n-grams of the text spelled in jamo (NFD), across
    piece boundaries too, so endings that differ in one jamo share the rest."""
    import unicodedata

    layer = PieceCharNgrams(PIECES, max_n=3, buckets=997, max_piece_chars=24, jamo=True)
    ids = np.array([[1, 2, 3, 4, 5, 0]], "int32")
    grams = np.asarray(layer(ids))[0]
    decomposed = [unicodedata.normalize("NFD", p) for p in PIECES[1:]]
    assert len(decomposed[0]) == 4  # ▁ ㅈ ㅗ ㅎ
    assert collections.Counter(grams[grams > 0].tolist()) == expected_ngrams(decomposed, 3, 997)
    sounds = PieceCharNgrams(["", "▁감", "▁갑"], max_n=2, buckets=997, jamo=True)
    first, second = (set(np.asarray(sounds(np.array([[i]], "int32")))[0].tolist()) - {0} for i in (1, 2))
    assert len(first) == len(second) == 7 and len(first & second) == 5  # ▁ ㄱ ㅏ ▁ㄱ ㄱㅏ; not ㅁ, ㅏㅁ


def test_ngrams_are_those_of_the_text_the_ids_spell():
    layer = PieceCharNgrams(PIECES, max_n=3, buckets=997)
    ids = np.array([[1, 2, 3, 4, 5, 0, 0], [3, 0, 0, 0, 0, 0, 0]], "int32")
    grams = np.asarray(layer(ids))
    assert grams.shape == (2, 7 * layer.per_step) and grams.dtype == np.int32
    for row, used in zip(grams, ([1, 2, 3, 4, 5], [3])):
        got = collections.Counter(row[row > 0].tolist())
        assert got == expected_ngrams([PIECES[i] for i in used], 3, 997)


def test_padding_and_unknown_ids_spell_nothing():
    layer = PieceCharNgrams(PIECES, max_n=4, buckets=50)
    grams = np.asarray(layer(np.array([[0, 0, 0], [0, 99, -1]], "int32")))
    assert not grams.any()
    with pytest.raises(ValueError, match="pieces is empty"):
        PieceCharNgrams([])


def test_long_pieces_are_cut():
    layer = PieceCharNgrams(["", "ㅋ" * 40], max_n=2, buckets=1000, max_piece_chars=5)
    assert layer.per_step == 5 + 4 + 1  # 1-grams, 2-grams of 5 chars, one spanning 1+1 pair


def test_hashed_bag_is_the_sqrt_n_sum_of_present_rows():
    bag = HashedBag(buckets=4, dim=3)
    ids = np.array([[1, 1, 3, 0], [0, 0, 0, 0]], "int32")
    out = np.asarray(bag(ids))
    table = np.asarray(bag.embeddings)
    np.testing.assert_allclose(out[0], (2 * table[1] + table[3]) / np.sqrt(3), rtol=1e-5)
    np.testing.assert_array_equal(out[1], 0.0)
    # In training, id dropout leaves ids out of the bag (never at inference).
    dropping = HashedBag(buckets=4, dim=3, id_dropout=0.5)
    many = np.ones((64, 200), "int32")
    np.testing.assert_array_equal(np.asarray(dropping(many)), np.asarray(dropping(many)))
    trained = np.asarray(dropping(many, training=True))
    assert trained.std(axis=0).max() > 0  # rows differ in how many ids they kept
    with pytest.raises(ValueError, match="id_dropout"):
        HashedBag(4, 3, id_dropout=1.0)


def test_ngram_pieces_blank_control_and_unknown(tmp_path):
    from kemdy_tf.models.tokenizer import train_sentencepiece

    texts = ["정말 좋은 영화 였다", "별로 재미 없다 ㅋㅋ", "배우 연기가 좋다"] * 30
    model = Path(train_sentencepiece(texts, tmp_path / "tok.model", 40, seed=0))
    processor = spm.SentencePieceProcessor(model_file=str(model))
    pieces = ngram_pieces(model.read_bytes())
    assert len(pieces) == processor.get_piece_size()
    assert pieces[0] == pieces[processor.unk_id()] == "" and "▁좋" in pieces


def test_text_classifier_with_the_char_ngram_bag_trains_and_reloads(tmp_path):
    fusion_cfg = FusionConfig(n_heads=2, lstm_units=8, char_ngrams=3, char_ngram_model="bag", char_ngram_buckets=128,
                              char_ngram_dim=4)
    backbone = build_text_backbone(TextEncoderConfig(d_model=8, n_layers=1, n_heads=2, ff_dim=16, gru_units=8),
                                   FeatureConfig(max_tokens=7), len(PIECES))
    with pytest.raises(ValueError, match="needs the tokenizer's pieces"):
        build_fusion_model(None, backbone, fusion_cfg, 2, modalities=("text",))
    model = build_fusion_model(None, backbone, fusion_cfg, 2, modalities=("text",), pieces=PIECES)
    assert {"char_ngram_ids", "char_ngram_bag", "with_wide_features"} <= {layer.name for layer in model.layers}
    ids = np.array([[1, 2, 3, 0, 0, 0, 0], [3, 4, 5, 0, 0, 0, 0]] * 8, "int32")
    labels = np.array([1, 0] * 8)
    model.compile(keras.optimizers.Adam(0.05), {"emotion": "sparse_categorical_crossentropy"})
    before = np.asarray(model.get_layer("char_ngram_bag").embeddings).copy()
    model.fit({"token_ids": ids}, {"emotion": labels}, epochs=3, verbose=0)
    assert not np.allclose(before, np.asarray(model.get_layer("char_ngram_bag").embeddings))
    path = tmp_path / "text_clf.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(again.predict({"token_ids": ids}, verbose=0)["emotion"],
                               model.predict({"token_ids": ids}, verbose=0)["emotion"], atol=1e-6)
    # The fusion model leaves the bag out (its transcript goes through modality dropout).
    audio = build_audio_backbone(AudioEncoderConfig(conv_filters=(4,), d_model=8, n_layers=1, n_heads=2, ff_dim=8,
                                                    gru_units=8), FeatureConfig(n_mels=16, max_tokens=7))
    fusion = build_fusion_model(audio, backbone, fusion_cfg, 2, pieces=PIECES)
    assert "char_ngram_bag" not in {layer.name for layer in fusion.layers}


class _StandInRun:
    """What the text_clf builder reads from a run: config, tokenizer, vocabulary size."""

    def __init__(self, config, workdir, tokenizer_path):
        self.config, self.workdir, self.tokenizer_path = config, workdir, tokenizer_path
        self.pieces = spm.SentencePieceProcessor(model_file=str(tokenizer_path)).get_piece_size()

    def vocab_size(self):
        return self.pieces

    def model_path(self, stage):
        return self.workdir / stage / "model.keras"


def test_text_clf_stage_builds_the_bag_from_the_runs_tokenizer(tmp_path, tiny_config):
    from kemdy_tf import stages
    from kemdy_tf.models.tokenizer import train_sentencepiece

    texts = ["정말 좋은 영화 였다", "별로 재미 없다 ㅋㅋ", "배우 연기가 좋다"] * 30
    model_path = Path(train_sentencepiece(texts, tmp_path / "tokenizer.model", 40, seed=0))
    config = copy.deepcopy(tiny_config)  # the fixture is shared by the session
    config.fusion.char_ngrams, config.fusion.char_ngram_model = 3, "bag"
    run = _StandInRun(config, tmp_path, model_path)
    classifier = stages.get("text_clf").build(run, "text_clf", from_scratch=True)
    assert classifier.get_layer("char_ngram_ids").pieces == ngram_pieces(model_path.read_bytes())
    assert classifier.get_layer("char_ngram_ids").max_n == 3
    # Audio and fusion classifiers do not read it; a backbone's own tokenizer (a folder) is refused.
    assert "char_ngram_ids" not in {layer.name for layer in stages.get("audio_clf").build(
        run, "audio_clf", from_scratch=True).layers}
    run.tokenizer_path = tmp_path
    with pytest.raises(stages.StageError, match="char_ngrams=0"):
        stages.get("text_clf").build(run, "text_clf", from_scratch=True)
