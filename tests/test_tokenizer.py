"""SentencePiece training and the in-graph keras-hub tokenizer."""

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

from kemdy_tf.models import tokenizer as tok_lib

KOREAN = [
    "오늘 날씨가 정말 좋네요", "저는 학교에 갑니다", "정말 재미있어요!", "아 친구들도?",
    "그래서 어떻게 됐어요", "너무 슬퍼서 울었어요", "화가 나서 참을 수 없어요",
    "깜짝 놀랐잖아요", "우리 같이 밥 먹으러 가요", "그 영화 봤어요?",
] * 4


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tok_lib.train_sentencepiece(KOREAN, tmp_path_factory.mktemp("tok") / "tokenizer.model", 200)


@pytest.fixture(scope="module")
def tokenizer(model_path):
    return tok_lib.load_tokenizer(model_path, 64)


def test_special_ids_pad_0_unk_1_no_bos_eos(model_path):
    processor = spm.SentencePieceProcessor(model_file=str(model_path))
    assert processor.pad_id() == 0 and processor.id_to_piece(0) == "<pad>"
    assert processor.unk_id() == 1
    assert processor.bos_id() == -1 and processor.eos_id() == -1


def test_korean_round_trip_and_fixed_length(tokenizer):
    for text in set(KOREAN):
        ids = np.asarray(tokenizer(text))
        assert ids.shape == (64,) and ids.dtype == np.int32
        real = ids[ids != 0]
        assert len(real) > 0 and np.all(ids[len(real):] == 0), "pads only at the end"
        assert tokenizer.detokenize(ids) == text


def test_empty_text_is_all_padding(tokenizer):
    np.testing.assert_array_equal(np.asarray(tokenizer("")), np.zeros(64, np.int32))


def test_long_text_is_cut_to_max_tokens(tokenizer):
    ids = np.asarray(tokenizer(" ".join(KOREAN)))
    assert ids.shape == (64,) and np.all(ids != 0)


def test_in_graph_tokenization_equals_eager(tokenizer):
    texts = ["오늘 날씨가 정말 좋네요", "", "모르는 글자 펭귄"]
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(3).map(tokenizer)
    (graph_ids,) = list(ds.as_numpy_iterator())
    assert graph_ids.dtype == np.int32 and graph_ids.shape == (3, 64)
    np.testing.assert_array_equal(graph_ids, np.stack([np.asarray(tokenizer(t)) for t in texts]))
    assert tok_lib.UNK_ID in graph_ids[2], "unseen characters map to <unk>"


def test_vocab_size_adapts_to_the_corpus(tmp_path):
    big = tok_lib.train_sentencepiece(KOREAN, tmp_path / "big.model", 8000)
    size = spm.SentencePieceProcessor(model_file=str(big)).vocab_size()
    assert 3 < size < 8000
    with pytest.warns(UserWarning, match="below the"):
        small = tok_lib.train_sentencepiece(KOREAN, tmp_path / "small.model", 5)
    needed = spm.SentencePieceProcessor(model_file=str(small)).vocab_size()
    assert needed > 5


def test_training_is_deterministic(tmp_path, model_path):
    again = tok_lib.train_sentencepiece(KOREAN, tmp_path / "again.model", 200)
    assert again.read_bytes() == model_path.read_bytes()


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no non-empty transcript"):
        tok_lib.train_sentencepiece(["", "  "], tmp_path / "x.model", 100)
    with pytest.raises(ValueError, match="does not exist"):
        tok_lib.load_tokenizer(tmp_path / "nothing.model", 64)
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        tok_lib.load_tokenizer(junk, 64)


def test_a_model_without_pad_id_0_is_refused(tmp_path):
    path = tmp_path / "default_ids.model"
    with open(path, "wb") as handle:  # SentencePiece's defaults: unk 0, bos 1, eos 2, no pad
        spm.SentencePieceTrainer.train(sentence_iterator=iter(KOREAN), model_writer=handle,
                                       vocab_size=120, hard_vocab_limit=False, minloglevel=2)
    with pytest.raises(ValueError, match="pad id -1"):
        tok_lib.load_tokenizer(path, 64)


# --- sizes from the corpus ---------------------------------------------------------------


def test_corpus_vocab_size_grows_with_the_corpus_and_is_clipped():
    assert tok_lib.corpus_vocab_size(KOREAN) == tok_lib.MIN_CORPUS_VOCAB
    words = [f"단어{i} 말{i}" for i in range(20000)]
    size = tok_lib.corpus_vocab_size(words)
    assert tok_lib.MIN_CORPUS_VOCAB < size <= tok_lib.MAX_CORPUS_VOCAB
    assert tok_lib.corpus_vocab_size(words * 10 + [f"x{i}" for i in range(200000)]) == tok_lib.MAX_CORPUS_VOCAB


def test_vocab_size_0_means_sized_from_the_corpus(tmp_path, model_path):
    sized = tok_lib.train_sentencepiece(KOREAN, tmp_path / "sized.model", 0)
    assert spm.SentencePieceProcessor(model_file=str(sized)).vocab_size() > 3


def test_corpus_max_tokens_is_a_rounded_percentile_and_reports_truncation(model_path):
    lengths = list(range(1, 101))
    assert tok_lib.corpus_max_tokens(lengths) == 104  # 99th percentile 99.01 -> multiple of 8
    assert tok_lib.corpus_max_tokens([1, 2]) == tok_lib.MIN_CORPUS_TOKENS
    assert tok_lib.corpus_max_tokens([]) == tok_lib.MIN_CORPUS_TOKENS
    assert tok_lib.corpus_max_tokens([10_000]) == tok_lib.MAX_CORPUS_TOKENS
    assert tok_lib.truncated_share(lengths, 90) == 0.1
    counted = tok_lib.token_lengths(model_path, ["오늘 날씨가 정말 좋네요", ""])
    assert counted[0] > 0 and counted[1] == 0
