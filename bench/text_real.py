"""The text classifier on real Korean text (NSMC) against a TF-IDF baseline.

    PYTHONPATH=. TF_NUM_INTEROP_THREADS=1 python bench/text_real.py --rows 20000
    PYTHONPATH=. TF_NUM_INTEROP_THREADS=1 python bench/text_real.py --rows 150000 --epochs 3

Data: /work/shared/data/nsmc (or --data DIR): `ratings_train.txt` / `ratings_test.txt`,
TSV `id document label` (see its README). Skips with a message and exit code 0 when
the folder is absent. Not part of CI (minutes to an hour on CPU).

What it measures, per training size (`--rows` random training rows, seed 0; the last
10% of them are the validation split for early stopping, the model trains on the
other 90%; the TF-IDF baseline fits on all `--rows`):

* TF-IDF baseline: char_wb 1-4 grams, sublinear tf, min_df 2, logistic regression C=10.
* text_clf: the project's `build_text_backbone` + `build_fusion_model(modalities=("text",))`
  exactly as `train.py --stage text_clf --from-scratch` builds it, with the text
  recipe: tokenizer vocabulary `corpus_vocab_size`, `max_tokens` from
  `corpus_max_tokens` (99th percentile), `text_optimizer` (AdamW, warmup, cosine),
  `text_classification_loss` (label smoothing), early stopping on validation loss.

Accuracy is on the whole test file. One JSON line per row is appended to `--out`
and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path("/work/shared/data/nsmc")


def read_nsmc(path: Path):
    import pandas as pd

    table = pd.read_csv(path, sep="\t", quoting=3, keep_default_na=False, dtype={"document": str})
    return table["document"].astype(str).tolist(), table["label"].astype(int).to_numpy()


def tfidf_baseline(train_texts, train_labels, test_texts, test_labels) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    start = time.time()
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=2)
    features = vectorizer.fit_transform(train_texts)
    model = LogisticRegression(C=10, max_iter=2000).fit(features, train_labels)
    accuracy = float((model.predict(vectorizer.transform(test_texts)) == test_labels).mean())
    return {"accuracy": accuracy, "train_s": round(time.time() - start, 1)}


def text_clf(train_texts, train_labels, val_texts, val_labels, test_texts, test_labels, *, epochs, batch_size,
             workdir: Path, overrides=()) -> dict:
    import keras
    import numpy as np
    import sentencepiece as spm

    from kemdy_tf.config import make_config
    from kemdy_tf.models import text_encoder, tokenizer
    from kemdy_tf.models.fusion import build_fusion_model

    cfg = make_config("small", overrides)
    start = time.time()
    vocab = cfg.features.vocab_size or tokenizer.corpus_vocab_size(train_texts)
    model_path = tokenizer.train_sentencepiece(train_texts, workdir / "tokenizer.model", vocab, seed=cfg.train.seed)
    lengths = tokenizer.token_lengths(model_path, train_texts)
    max_tokens = cfg.features.max_tokens or tokenizer.corpus_max_tokens(lengths)
    cfg.features.max_tokens = max_tokens
    processor = spm.SentencePieceProcessor(model_file=str(model_path))
    vocab_size = processor.vocab_size()

    def ids(texts):
        out = np.zeros((len(texts), max_tokens), "int32")
        for row, pieces in enumerate(processor.encode(list(texts))):
            pieces = pieces[:max_tokens]
            out[row, : len(pieces)] = pieces
        return out

    x_train, x_val, x_test = ids(train_texts), ids(val_texts), ids(test_texts)
    keras.utils.set_random_seed(cfg.train.seed)
    backbone = text_encoder.build_text_backbone(cfg.text, cfg.features, vocab_size)
    model = build_fusion_model(None, backbone, cfg.fusion, 2, modalities=("text",))
    steps = int(np.ceil(len(x_train) / batch_size)) * epochs
    model.compile(text_encoder.text_optimizer(cfg.text, cfg.train.learning_rate, steps),
                  loss={"emotion": text_encoder.text_classification_loss(cfg.text, 2)},
                  metrics={"emotion": "accuracy"})
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.train.patience, restore_best_weights=True)
    history = model.fit(x_train, {"emotion": train_labels}, validation_data=(x_val, {"emotion": val_labels}),
                        epochs=epochs, batch_size=batch_size, callbacks=[stop], verbose=2)
    train_s = time.time() - start
    predicted = model.predict(x_test, batch_size=512, verbose=0)["emotion"].argmax(-1)
    return {
        "accuracy": float((predicted == test_labels).mean()),
        "train_s": round(train_s, 1),
        "vocab_size": int(vocab_size),
        "max_tokens": int(max_tokens),
        "truncated_share": round(tokenizer.truncated_share(lengths, max_tokens), 4),
        "epochs_run": len(history.history["loss"]),
        "val_accuracy": [round(v, 4) for v in history.history["val_accuracy"]],
        "text_config": dataclasses.asdict(cfg.text),
        "batch_size": batch_size,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, nargs="+", default=[20000])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--set", action="append", default=[], help="config override section.field=value")
    parser.add_argument("--workdir", type=Path, default=Path("runs/text_real"))
    parser.add_argument("--out", type=Path, default=Path("runs/text_real/results.jsonl"))
    args = parser.parse_args(argv)
    train_file, test_file = args.data / "ratings_train.txt", args.data / "ratings_test.txt"
    if not (train_file.is_file() and test_file.is_file()):
        print(f"skipped: {args.data} has no ratings_train.txt / ratings_test.txt")
        return 0
    import numpy as np

    texts, labels = read_nsmc(train_file)
    test_texts, test_labels = read_nsmc(test_file)
    order = np.random.RandomState(0).permutation(len(texts))
    rows = []
    for n in args.rows:
        chosen = order[:n]
        n_val = n // 10
        fit, val = chosen[n_val:], chosen[:n_val]
        pick = lambda idx: [texts[i] for i in idx]  # noqa: E731
        baseline = tfidf_baseline(pick(chosen), labels[chosen], test_texts, test_labels)
        workdir = args.workdir / f"rows{n}"
        model = text_clf(pick(fit), labels[fit], pick(val), labels[val], test_texts, test_labels,
                         epochs=args.epochs, batch_size=args.batch_size, workdir=workdir, overrides=args.set)
        row = {"rows": n, "test_n": len(test_labels), "tfidf": baseline, "text_clf": model, "overrides": args.set}
        rows.append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print("| rows | text_clf acc | TF-IDF acc | text_clf train s | TF-IDF s | vocab | max_tokens | truncated |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        m, b = r["text_clf"], r["tfidf"]
        print(f"| {r['rows']} | {m['accuracy']:.3f} | {b['accuracy']:.3f} | {m['train_s']:.0f} | {b['train_s']:.0f} "
              f"| {m['vocab_size']} | {m['max_tokens']} | {m['truncated_share']:.2%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
