"""The text classifier on real Korean text (NSMC) against a TF-IDF baseline.

    PYTHONPATH=. TF_NUM_INTEROP_THREADS=1 python bench/text_real.py --rows 20000
    PYTHONPATH=. TF_NUM_INTEROP_THREADS=1 python bench/text_real.py --rows 150000 --epochs 3
    PYTHONPATH=. TF_NUM_INTEROP_THREADS=1 python bench/text_real.py --task valence --rows 20000

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

`--task valence` trains the valence regressor instead, exactly as `train.py --stage
text` builds and compiles it (`build_text_encoder`, the registry's optimizer and MSE
loss), on the labels read as valence 1 (negative) and 5 (positive); it reports CCC and
RMSE on the whole test file beside the training-mean baseline (`kemdy_tf.scoring`).

Accuracy is on the whole test file. One JSON line per row is appended to `--out`
and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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


def _token_ids(train_texts, other_texts, cfg, workdir: Path):
    """The run's tokenizer recipe on these texts: a corpus-sized SentencePiece model and
    `max_tokens` from the training token lengths. Returns (id arrays for `train_texts`
    and each of `other_texts`, vocabulary size, facts for the report)."""
    import numpy as np
    import sentencepiece as spm

    from kemdy_tf.models import tokenizer

    vocab = cfg.features.vocab_size or tokenizer.corpus_vocab_size(train_texts)
    model_path = tokenizer.train_sentencepiece(train_texts, workdir / "tokenizer.model", vocab, seed=cfg.train.seed)
    lengths = tokenizer.token_lengths(model_path, train_texts)
    max_tokens = cfg.features.max_tokens or tokenizer.corpus_max_tokens(lengths)
    cfg.features.max_tokens = max_tokens
    processor = spm.SentencePieceProcessor(model_file=str(model_path))

    def ids(texts):
        out = np.zeros((len(texts), max_tokens), "int32")
        for row, pieces in enumerate(processor.encode(list(texts))):
            pieces = pieces[:max_tokens]
            out[row, : len(pieces)] = pieces
        return out

    facts = {"vocab_size": int(processor.vocab_size()), "max_tokens": int(max_tokens),
             "truncated_share": round(tokenizer.truncated_share(lengths, max_tokens), 4)}
    return [ids(train_texts)] + [ids(texts) for texts in other_texts], processor.vocab_size(), facts


def _fit(model, x_train, y_train, x_val, y_val, *, target, epochs, batch_size, cfg, stage):
    import keras

    from kemdy_tf import checkpoints, stages, training
    from kemdy_tf.stages import inputs_for

    # The figure train.py's checkpoint would keep for this stage (train.monitor).
    monitor, mode = training.monitored(stages.get(stage), cfg)
    stop = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.train.patience,
                                         restore_best_weights=True)
    # train.ema_epochs: validated and kept on the averaged weights, as in train.py
    average = [checkpoints.AveragedWeightsAtEpochEnd()] if cfg.train.ema_epochs > 0 else []
    return model.fit(inputs_for(model, {"token_ids": x_train}), {target: y_train},
                     validation_data=(inputs_for(model, {"token_ids": x_val}), {target: y_val}),
                     epochs=epochs, batch_size=batch_size, callbacks=[*average, stop], verbose=2)


def text_clf(train_texts, train_labels, val_texts, val_labels, test_texts, test_labels, *, epochs, batch_size,
             workdir: Path, overrides=(), recipes=()) -> dict:
    import keras
    import numpy as np

    from kemdy_tf import ngram_choice, stages, training
    from kemdy_tf.config import make_config
    from kemdy_tf.models import ngram_logistic, text_encoder
    from kemdy_tf.models.char_ngrams import ngram_pieces
    from kemdy_tf.models.fusion import build_fusion_model
    from kemdy_tf.stages import inputs_for

    # NSMC's two labels as the run's classes: the registry's loss and metrics size themselves from them.
    cfg = make_config("small", [*overrides, "data.classes=negative,positive"], recipes)
    start = time.time()
    (x_train, x_val, x_test), vocab_size, facts = _token_ids(train_texts, (val_texts, test_texts), cfg, workdir)
    pieces = ngram_pieces((workdir / "tokenizer.model").read_bytes())

    def batches(x, y):  # what ngram_logistic reads: (inputs, {target: labels}) batches
        return [({"token_ids": x[i: i + 1024]}, {"emotion": y[i: i + 1024]}) for i in range(0, len(x), 1024)]

    choice = {}
    if ngram_choice.wants_choice_of(cfg):  # as train.py: the n-gram regression chosen on validation
        def loss_of(settings):
            fusion = dataclasses.replace(cfg.fusion, **settings)
            model = build_fusion_model(None, text_encoder.build_text_backbone(cfg.text, cfg.features, vocab_size),
                                       fusion, len(cfg.data.classes), modalities=("text",), pieces=pieces)
            return ngram_choice.validation_losses(model, batches(x_train, train_labels),
                                                  batches(x_val, val_labels), fusion.char_ngram_c)

        choice = ngram_choice.best(loss_of)
        cfg = dataclasses.replace(cfg, fusion=dataclasses.replace(cfg.fusion, **choice["settings"]))

    def compiled(rows: int):
        keras.utils.set_random_seed(cfg.train.seed)
        backbone = text_encoder.build_text_backbone(cfg.text, cfg.features, vocab_size)
        model = build_fusion_model(None, backbone, cfg.fusion, len(cfg.data.classes), modalities=("text",),
                                   pieces=pieces)
        training.compile_stage_model(model, "text_clf", cfg, total_steps=int(np.ceil(rows / batch_size)) * epochs,
                                     epochs=epochs)
        return model

    def accuracy(model) -> float:
        predicted = model.predict(inputs_for(model, {"token_ids": x_test}), batch_size=512, verbose=0)["emotion"]
        return float((predicted.argmax(-1) == test_labels).mean())

    model = compiled(len(x_train))
    wide = {}
    if ngram_logistic.has_ngram_logistic(model):  # as train.py: fitted before the deep path trains
        wide_start = time.time()
        wide["ngram_rows"] = ngram_logistic.fit_ngram_logistic(model, batches(x_train, train_labels),
                                                               cfg.fusion.char_ngram_c)
        wide["ngram_fit_s"] = round(time.time() - wide_start, 1)
    history = _fit(model, x_train, train_labels, x_val, val_labels, target="emotion", epochs=epochs,
                   batch_size=batch_size, cfg=cfg, stage="text_clf")
    if wide:  # and mixed by the share the validation split prefers
        wide["deep_accuracy"] = accuracy(model)
        wide["share"] = ngram_logistic.choose_share_for(model, batches(x_val, val_labels))
    refit = {}
    if cfg.train.refit:  # as train.py: the kept epochs again, on training + validation rows
        monitor, mode = training.monitored(stages.get("text_clf"), cfg)
        kept = training.best_epoch(history.history[monitor], mode)
        refit = {"early_stopped_accuracy": accuracy(model), "refit_epochs": kept}
        model = compiled(len(x_train) + len(x_val))
        x_all, y_all = np.concatenate([x_train, x_val]), np.concatenate([train_labels, val_labels])
        if wide:
            ngram_logistic.fit_ngram_logistic(model, batches(x_all, y_all), cfg.fusion.char_ngram_c)
        model.fit(inputs_for(model, {"token_ids": x_all}), {"emotion": y_all}, epochs=kept, batch_size=batch_size,
                  verbose=2)
        if wide:
            ngram_logistic.set_share(model, wide["share"])
    train_s = time.time() - start
    return {
        "accuracy": accuracy(model),
        **refit,
        **wide,
        **({"char_ngram_choice": choice} if choice else {}),
        "train_s": round(train_s, 1),
        **facts,
        "epochs_run": len(history.history["loss"]),
        "val_accuracy": [round(v, 4) for v in history.history["val_accuracy"]],
        "val_loss": [round(v, 4) for v in history.history["val_loss"]],
        "text_config": dataclasses.asdict(cfg.text),
        "batch_size": batch_size,
    }


# NSMC's binary label as a rating on KEMDy20's 1..5 valence scale.
VALENCE_OF_LABEL = (1.0, 5.0)


def text_valence(train_texts, train_labels, val_texts, val_labels, test_texts, test_labels, *, epochs,
                 batch_size, workdir: Path, overrides=(), recipes=()) -> dict:
    """The valence regressor exactly as `train.py --stage text` builds and compiles it
    (the registry's optimizer, loss and metrics), on NSMC labels read as valence 1 / 5.
    Scored on the test rows with `kemdy_tf.scoring` beside the training-mean baseline."""
    import keras
    import numpy as np

    from kemdy_tf import scoring, training
    from kemdy_tf.config import make_config
    from kemdy_tf.models import text_encoder
    from kemdy_tf.stages import inputs_for

    cfg = make_config("small", overrides, recipes)
    valence = np.asarray(VALENCE_OF_LABEL, "float32")
    y_train, y_val, y_test = valence[train_labels], valence[val_labels], valence[test_labels]
    start = time.time()
    (x_train, x_val, x_test), vocab_size, facts = _token_ids(train_texts, (val_texts, test_texts), cfg, workdir)
    keras.utils.set_random_seed(cfg.train.seed)
    model = text_encoder.build_text_encoder(cfg.text, cfg.features, vocab_size)
    steps = int(np.ceil(len(x_train) / batch_size)) * epochs
    training.compile_stage_model(model, "text", cfg, total_steps=steps, epochs=epochs)
    history = _fit(model, x_train, y_train, x_val, y_val, target="valence", epochs=epochs,
                   batch_size=batch_size, cfg=cfg, stage="text")
    train_s = time.time() - start
    predicted = model.predict(inputs_for(model, {"token_ids": x_test}), batch_size=512, verbose=0)["valence"]
    predicted = predicted.reshape(-1)
    return {
        "model": scoring.regression_metrics(y_test, predicted),
        "baseline": scoring.mean_baseline(y_test, float(y_train.mean())),
        # The rating read back as the binary label (above the scale's middle, 3: positive).
        "side_accuracy": float(((predicted > 3.0) == (test_labels == 1)).mean()),
        "train_s": round(train_s, 1),
        **facts,
        "epochs_run": len(history.history["loss"]),
        "val_loss": [round(v, 4) for v in history.history["val_loss"]],
        "batch_size": batch_size,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--task", choices=["emotion", "valence"], default="emotion",
                        help="emotion: text_clf accuracy beside TF-IDF; valence: the --stage text "
                             "regressor on labels read as valence 1 / 5, CCC and RMSE beside the training mean")
    parser.add_argument("--rows", type=int, nargs="+", default=[20000])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--recipe", dest="recipes", action="append", default=[], metavar="NAME|PATH",
                        help="a named recipe (python train.py --list-recipes) applied before --set, as train.py does")
    parser.add_argument("--set", action="append", default=[], help="config override section.field=value")
    parser.add_argument("--workdir", type=Path, default=Path("runs/text_real"))
    parser.add_argument("--out", type=Path, default=Path("runs/text_real/results.jsonl"))
    args = parser.parse_args(argv)
    from kemdy_tf.config import make_config

    make_config("small", args.set, args.recipes)  # a bad recipe or --set is refused before any data is read
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
        workdir = args.workdir / f"rows{n}"
        common = dict(epochs=args.epochs, batch_size=args.batch_size, workdir=workdir, overrides=args.set,
                      recipes=args.recipes)
        if args.task == "valence":
            model = text_valence(pick(fit), labels[fit], pick(val), labels[val], test_texts, test_labels, **common)
            row = {"task": "valence", "rows": n, "test_n": len(test_labels), "text": model, "recipes": args.recipes,
                   "overrides": args.set}
        else:
            baseline = tfidf_baseline(pick(chosen), labels[chosen], test_texts, test_labels)
            model = text_clf(pick(fit), labels[fit], pick(val), labels[val], test_texts, test_labels, **common)
            row = {"rows": n, "test_n": len(test_labels), "tfidf": baseline, "text_clf": model,
                   "recipes": args.recipes, "overrides": args.set}
        rows.append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(valence_table(rows) if args.task == "valence" else emotion_table(rows))
    return 0


def emotion_table(rows) -> str:
    lines = ["| rows | text_clf acc | TF-IDF acc | text_clf train s | TF-IDF s | vocab | max_tokens | truncated |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        m, b = r["text_clf"], r["tfidf"]
        lines.append(f"| {r['rows']} | {m['accuracy']:.3f} | {b['accuracy']:.3f} | {m['train_s']:.0f} "
                     f"| {b['train_s']:.0f} | {m['vocab_size']} | {m['max_tokens']} | {m['truncated_share']:.2%} |")
    return "\n".join(lines)


def valence_table(rows) -> str:
    lines = ["| rows | text CCC | text RMSE | mean CCC | mean RMSE | side acc | epochs | train s | vocab "
             "| max_tokens |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = r["text"]
        m, b = t["model"], t["baseline"]
        lines.append(f"| {r['rows']} | {m['ccc']:.3f} | {m['rmse']:.3f} | {b['ccc']:.3f} | {b['rmse']:.3f} "
                     f"| {t['side_accuracy']:.3f} | {t['epochs_run']} | {t['train_s']:.0f} | {t['vocab_size']} "
                     f"| {t['max_tokens']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
