"""The dataset analysis report and the bio-signal study (kemdy_tf.analysis).

One CLI run on a tiny synthetic set (2 sessions) is shared by the module; its numbers
are checked against the dataset itself (the wavs, the annotation, the E4 files).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile

from kemdy_tf.analysis import bio_study, dataset_stats
from kemdy_tf.analysis.__main__ import main
from kemdy_tf.data import bio, synthetic
from kemdy_tf.data.kemdy20 import read_kemdy20

BAD_EDA_LINE = "not-a-number,2020-0706-1000-00-000"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = synthetic.generate(tmp_path_factory.mktemp("analysis") / "KEMDy20", seed=0, sessions=2,
                              scripts=2, utterances=(5, 6))
    # One malformed E4 row: reported in problems.csv, never fatal.
    table, _ = read_kemdy20(root)
    broken = table["eda_path"].iloc[0]
    with open(broken, "a", encoding="ascii") as handle:
        handle.write(BAD_EDA_LINE + "\n")
    return root, broken


@pytest.fixture(scope="module")
def report(dataset, tmp_path_factory):
    root, _ = dataset
    out = tmp_path_factory.mktemp("report")
    code = main(["--data", str(root), "--out", str(out), "--max-k", "3", "--series-length", "16",
                 "--permutations", "30", "--vocab-size", "120", "--quiet"])
    assert code == 0
    table, skips = read_kemdy20(root)
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"),
                       parse_constant=lambda name: pytest.fail(f"stats.json holds {name}"))
    return out, stats, table


def test_emotion_counts_sum_to_the_table(report):
    _, stats, table = report
    assert stats["utterances"] == len(table)
    assert sum(stats["emotions"].values()) == len(table)
    assert stats["emotions"] == table["emotion"].value_counts().to_dict()
    per_session = {s: sum(row.values()) for s, row in stats["emotions_by_session"].items()}
    assert per_session == table["session"].value_counts().to_dict()
    per_sex = {s: sum(row.values()) for s, row in stats["emotions_by_sex"].items()}
    assert per_sex == table["sex"].value_counts().to_dict()


def test_durations_match_the_wav_files(report):
    _, stats, table = report
    seconds = [soundfile.read(path)[0].shape[0] / 16000 for path in table["wav_path"]]
    assert stats["duration_s"]["count"] == len(table)
    assert stats["duration_s"]["mean"] == pytest.approx(np.mean(seconds))
    assert stats["duration_s"]["max"] == pytest.approx(max(seconds))
    assert stats["duration_s"]["total_hours"] == pytest.approx(sum(seconds) / 3600)
    durations = dataset_stats.wav_durations(table)
    assert durations.to_numpy() == pytest.approx(seconds)


def test_ties_match_the_annotation(report):
    _, stats, table = report
    tied = table["labels"].str.contains(";")
    assert stats["ties"]["tied"] == int(tied.sum()) > 0
    assert sum(stats["ties"]["combinations"].values()) == int(tied.sum())
    expected = table.loc[tied, "labels"].map(lambda raw: "+".join(sorted(raw.split(";")))).value_counts()
    assert stats["ties"]["combinations"] == expected.to_dict()


def test_lengths_match_the_transcripts(report):
    out, stats, table = report
    words = table["text"].str.split().str.len()
    assert stats["words"]["mean"] == pytest.approx(words.mean())
    assert stats["words"]["max"] == words.max()
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    tokens = [len(processor.encode(text)) for text in table["text"]]
    assert stats["tokens"]["count"] == len(table)
    assert stats["tokens"]["mean"] == pytest.approx(np.mean(tokens))


def test_valence_arousal_histograms_count_every_labelled_row(report):
    _, stats, table = report
    va = stats["valence_arousal"]
    for emotion, count in stats["emotions"].items():
        assert sum(va[emotion]["valence"]["histogram"]) == count
        assert va[emotion]["arousal"]["mean"] == pytest.approx(table.loc[table.emotion == emotion, "arousal"].mean())


def test_noise_tags_of_the_synthetic_transcripts(report):
    _, stats, table = report
    counted = dataset_stats.noise_tag_counts(table["text_raw"])
    assert {t: int(n) for t, n in counted["occurrences"].items()} == \
        {t: v["occurrences"] for t, v in stats["noise_tags"].items()}
    # Every transcript whose raw text differs from its cleaned text carries a tag.
    changed = (table["text_raw"].str.split().str.join(" ") != table["text"]).sum()
    assert counted["transcripts"].max() <= changed <= counted["transcripts"].sum()


def test_noise_tag_counts_match_a_hand_count():
    texts = [
        "n/ 아 친구들도? l/",  # n/ 1, l/ 1
        "그* 저+ 저 음/ 그래서",  # * 1, + 1, / 1
        "c/n/ 좋아 / b/ b/",  # c/ 1, n/ 1, / 1, b/ 2
        "u/ N/ 뭐/ 어/ *그",  # u/ 1, N/ 1, / 2, * 1
        "그냥 말했어",  # none
    ]
    counts = dataset_stats.noise_tag_counts(texts)
    assert counts["occurrences"].to_dict() == {"c/": 1, "n/": 2, "N/": 1, "u/": 1, "l/": 1, "b/": 2,
                                              "*": 2, "+": 1, "/": 4}
    assert counts["transcripts"].to_dict() == {"c/": 1, "n/": 2, "N/": 1, "u/": 1, "l/": 1, "b/": 1,
                                              "*": 2, "+": 1, "/": 3}


def test_skip_summary_groups_reasons():
    skips = pd.DataFrame({"file": ["a.csv"] * 3, "row": [3, 4, 9], "segment_id": ["x", "y", "z"],
                          "reason": ["missing wav: no x.wav", "missing wav: no y.wav", "empty label: ''"]})
    assert dataset_stats.skip_summary(skips)["reasons"] == {"missing wav": 2, "empty label": 1}
    assert dataset_stats.skip_summary(skips.iloc[:0]) == {"skipped": 0, "reasons": {}}


def test_clusters_cover_every_utterance_with_bio_data(report):
    out, stats, table = report
    features = pd.read_csv(out / "bio_features.csv")
    assert len(features) == len(table)
    for kind in ("eda", "temp"):
        clusters = pd.read_csv(out / f"clusters_{kind}.csv")
        with_data = set(features.loc[features[f"{kind}_n"] > 0, "segment_id"])
        assert set(clusters["segment_id"]) == with_data
        study = stats["bio"]["clusters"][kind]
        assert 2 <= study["k"] <= 3
        assert set(clusters["cluster"]) <= set(range(study["k"]))
        assert sum(study["sizes"]) == len(clusters)
        association = study["association"]
        assert association["n"] == len(clusters)
        assert sum(sum(row.values()) for row in association["table"].values()) == len(clusters)
        assert 0 < association["mutual_info_permutation_p"] <= 1
        assert study["selection"]["ks"] == [2, 3]


def test_malformed_e4_row_is_reported(report, dataset):
    out, stats, _ = report
    _, broken = dataset
    problems = pd.read_csv(out / "problems.csv")
    assert problems["file"].tolist() == [broken]
    assert "not a number" in problems["reason"].iloc[0]
    assert stats["problems"]["count"] == 1


def test_report_shows_every_figure(report):
    out, stats, _ = report
    text = (out / "report.md").read_text(encoding="utf-8")
    expected = {"lengths", "emotions", "emotions_by_session", "emotions_by_sex", "ties", "valence_arousal",
                "noise_tags", "bio_session", "bio_k_eda", "bio_clusters_eda", "bio_k_temp", "bio_clusters_temp"}
    assert set(stats["figures"]) == expected
    for name in stats["figures"].values():
        assert f"]({name})" in text
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{stats['ties']['tied']} utterances" in text
    assert "Do EDA clusters carry emotion information?" in text
    assert "synthetic set" in text.splitlines()[2]  # the source line warns that it is not KEMDy20


def test_session_signals_shade_the_speakers_utterances(report):
    _, stats, table = report
    speaker = stats["bio"]["session_plot"]["speaker"]
    assert speaker == table["speaker"].iloc[0]
    signals, utterances = bio_study.session_signals(table, speaker, problems=[])
    own = table[table["speaker"] == speaker]
    assert set(utterances["segment_id"]) == set(bio.segment_series(own, "eda", problems=[]))
    assert len(utterances) == stats["bio"]["session_plot"]["utterances_shaded"] == len(own)
    assert (utterances["end"] > utterances["start"]).all()
    assert min(frame["minutes"].min() for frame in signals.values()) == 0


def test_unknown_speaker_is_a_clear_error(dataset, tmp_path, capsys):
    root, _ = dataset
    assert main(["--data", str(root), "--out", str(tmp_path), "--speaker", "User999F", "--quiet"]) == 2
    assert "speaker 'User999F' is not in the table" in capsys.readouterr().err


def test_emotion_association_separates_dependence_from_chance():
    rng = np.random.default_rng(0)
    emotion = np.array(["happy", "sad"] * 60)
    dependent = bio_study.emotion_association((emotion == "happy").astype(int), emotion, n_permutations=50)
    assert dependent["mutual_info"] == pytest.approx(np.log(2))
    assert dependent["adjusted_mutual_info"] == pytest.approx(1.0)
    assert dependent["mutual_info_permutation_p"] == pytest.approx(1 / 51)
    assert dependent["chi2_p"] < 1e-10
    independent = bio_study.emotion_association(rng.integers(0, 2, len(emotion)), emotion, n_permutations=50)
    assert independent["mutual_info_permutation_p"] > 0.05
    assert independent["mutual_info"] < dependent["mutual_info"] / 10


def test_choose_k_finds_two_shape_families():
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 1, 20)
    series = {f"u{i}": (ramp if i % 2 else ramp[::-1]) + rng.normal(0, 0.05, 20) for i in range(30)}
    ids, data = bio_study.series_matrix(series, length=12)
    assert data.shape == (30, 12, 1)
    assert np.allclose(data.mean(axis=1), 0, atol=1e-6)  # z-normalised
    selection = bio_study.choose_k([2, 3], data)
    assert selection["best_k"] == 2
    labels = selection["models"][2].labels_
    rising = np.array([int(seg[1:]) % 2 for seg in ids])
    assert len(set(zip(labels, rising))) == 2  # clusters are exactly the two shapes
