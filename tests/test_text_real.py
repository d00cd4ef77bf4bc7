"""The from-scratch text path on real Korean text, on a 300-review NSMC cut.

`tests/fixtures/nsmc_small.csv` (CC0, source in `nsmc_small.md` beside it) stands in
for the full corpus, which may be absent: nothing here reads `/work/shared/data/nsmc`.
The training checks fit 270 reviews and score those same reviews (they are also the
early-stopping split, so the restored weights are the best fit): 300 reviews are too
few for a held-out score that is both fast and stable, but a text path that loses the
tokens (a mask, a truncation, a broken tokenizer) stays at chance even there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import text_real  # noqa: E402
from kemdy_tf.models import tokenizer  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "nsmc_small.csv"
N_FIT = 270
# Memorising 270 reviews in a few seconds: the early stopper must not cut it short, and
# 48 tokens hold 89% of these reviews (their 99th percentile, 104, doubles the time).
FIT_SETTINGS = ["train.patience=100", "train.learning_rate=0.003", "features.max_tokens=48"]


@pytest.fixture(scope="module")
def reviews():
    table = pd.read_csv(FIXTURE, keep_default_na=False, dtype={"document": str})
    return table["document"].tolist(), table["label"].to_numpy()


def test_fixture_is_a_balanced_korean_cut(reviews):
    texts, labels = reviews
    assert len(texts) == 300 and np.bincount(labels).tolist() == [150, 150]
    assert all(text.strip() for text in texts)
    assert sum(any("\uac00" <= ch <= "\ud7a3" for ch in text) for text in texts) > 280  # Hangul


def test_tokenizer_sizes_itself_from_korean_reviews(reviews, tmp_path):
    texts, _ = reviews
    vocab = tokenizer.corpus_vocab_size(texts)
    assert tokenizer.MIN_CORPUS_VOCAB <= vocab <= tokenizer.MAX_CORPUS_VOCAB
    model = tokenizer.train_sentencepiece(texts, tmp_path / "sp.model", 0)
    lengths = tokenizer.token_lengths(model, texts)
    max_tokens = tokenizer.corpus_max_tokens(lengths)
    assert max_tokens % 8 == 0 and max(lengths) >= max_tokens
    assert tokenizer.truncated_share(lengths, max_tokens) <= 0.02  # the 99th percentile
    # Subword pieces, not one piece per syllable.
    assert sum(lengths) < 0.9 * sum(len(text.replace(" ", "")) for text in texts)


@pytest.mark.slow  # ~40 s of real reviews: the gated slow job
def test_text_clf_learns_the_reviews(reviews, tmp_path):
    texts, labels = reviews
    fit = (texts[:N_FIT], labels[:N_FIT])
    # The classifier sits at chance for ~3 epochs of batch 16, then fits (0.94 after 4).
    result = text_real.text_clf(*fit, *fit, *fit, epochs=6, batch_size=16, workdir=tmp_path,
                                overrides=FIT_SETTINGS)
    assert result["epochs_run"] == 6 and result["max_tokens"] == 48
    assert result["accuracy"] >= 0.8, result  # nothing learned: 0.5


@pytest.mark.slow  # ~50 s; tests/test_refit.py checks train.py's refit, which the bench follows
def test_text_clf_refits_on_training_and_validation_reviews(reviews, tmp_path):
    """train.refit in the bench, as in train.py: the kept epochs again on both splits,
    which the scored reviews (all of them) then include."""
    texts, labels = reviews
    fit = (texts[:N_FIT], labels[:N_FIT])  # validation = training: the best epoch is a late one
    result = text_real.text_clf(*fit, *fit, *fit, epochs=6, batch_size=16, workdir=tmp_path,
                                overrides=[*FIT_SETTINGS, "train.refit=true"])
    kept = int(np.argmin(result["val_loss"])) + 1
    assert result["refit_epochs"] == kept and 0.0 <= result["early_stopped_accuracy"] <= 1.0
    assert result["accuracy"] >= 0.8, result


@pytest.mark.slow  # ~35 s: the gated slow job
def test_text_clf_fits_its_ngram_logistic_regression_and_mixes_it_in(reviews, tmp_path):
    """fusion.char_ngram_model=nblr in the bench, as in train.py: fitted before the deep
    path, mixed by the validation split's share. Two epochs leave the deep path near
    chance while the n-gram regression fits the reviews: the share must follow it."""
    from kemdy_tf.models.ngram_logistic import SHARE_GRID

    texts, labels = reviews
    fit = (texts[:N_FIT], labels[:N_FIT])
    result = text_real.text_clf(*fit, *fit, *fit, epochs=2, batch_size=16, workdir=tmp_path, overrides=[
        *FIT_SETTINGS, "fusion.char_ngrams=6", "fusion.char_ngram_model=nblr", "fusion.char_ngram_jamo=true"])
    assert result["ngram_rows"] == N_FIT and result["share"] in SHARE_GRID
    assert result["share"] >= 0.5 and result["accuracy"] >= 0.9 > result["deep_accuracy"], result


def test_valence_regressor_learns_the_reviews(reviews, tmp_path):
    texts, labels = reviews
    fit = (texts[:N_FIT], labels[:N_FIT])
    result = text_real.text_valence(*fit, *fit, *fit, epochs=4, batch_size=32, workdir=tmp_path,
                                    overrides=FIT_SETTINGS)
    assert result["baseline"]["ccc"] == 0.0 and result["baseline"]["value"] == pytest.approx(3.0, abs=0.2)
    assert result["model"]["ccc"] >= 0.5, result  # 0.83 after 3 epochs
    assert result["model"]["rmse"] < result["baseline"]["rmse"]


def test_bench_skips_without_the_corpus(tmp_path, capsys):
    assert text_real.main(["--data", str(tmp_path / "absent"), "--task", "valence"]) == 0
    assert "skipped" in capsys.readouterr().out
