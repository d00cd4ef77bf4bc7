"""Each n-gram regression candidate of the text classifier, alone, on trained runs' test splits.

    python bench/ngram_candidates.py runs/synthetic runs/share_default/folds/fold0 ...

For every run folder (one with a trained `text_clf`; its tokenizer and splits are reused),
each candidate of `kemdy_tf.ngram_choice.CANDIDATES` is fitted on the training split with
the run's class weights, exactly as the stage's choice fits it, and scored alone: its
class-weighted validation log loss (what the choice reads) and its test UA (what the
choice cannot see). Printed per run: the test UA of each candidate, the candidate with the
lowest validation loss and its gain over the default (± the standard error of the paired
difference), and what `ngram_choice.decide` decides. docs/text_real.md ("Which regression by
default") is its output. Seconds per run on CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def candidates_of(workdir) -> dict:
    """`{name: (validation losses per utterance, test UA)}` for one run folder."""
    import keras
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score

    from kemdy_tf import ngram_choice, run as run_lib, stages, training
    from kemdy_tf.class_balance import class_balance
    from kemdy_tf.models import ngram_logistic

    run = ngram_choice.with_settings(run_lib.open_run(workdir),
                                     {"char_ngram_model": ngram_choice.AUTO})
    tokenizer, spec = run.tokenizer(), stages.get("text_clf")
    weighting, weights, _ = class_balance(run)
    class_weights = training._fitted_path_weights(run, weighting, weights)
    found = {}
    for name, settings in ngram_choice.CANDIDATES:
        candidate = ngram_choice.with_settings(run, settings)
        model = training.build_stage_model(candidate, "text_clf")

        def split(name, **kw):
            return stages.stage_dataset(candidate, spec, name, training=False, tokenizer=tokenizer, model=model, **kw)

        losses = ngram_choice.validation_losses(model, split("train", class_weights=class_weights), split("val"),
                                                run.config.fusion.char_ngram_c, class_weights)
        scores = keras.Model(model.input, model.get_layer(ngram_logistic.NGRAM_SCORES).output)
        answers, labels = [], []
        for x, y in split("test"):
            answers.append(np.asarray(scores.predict_on_batch(x)).argmax(axis=1))
            labels.append(np.asarray(y["emotion"]).reshape(-1))
        found[name] = (losses, float(balanced_accuracy_score(np.concatenate(labels), np.concatenate(answers))))
    return found


def main(argv=None) -> int:
    import warnings

    from kemdy_tf import ngram_choice

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("workdirs", nargs="+", help="run folders with a trained text_clf")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
    names = [name for name, _ in ngram_choice.CANDIDATES]
    default = names[0]
    print("| run (validation rows) | " + " | ".join(f"`{n}`" for n in names)
          + " | lowest validation loss | its gain over the default ± s.e. | chosen |")
    print("|---|" + "---:|" * len(names) + "---|---|---|")
    for workdir in args.workdirs:
        found = candidates_of(workdir)
        report = ngram_choice.decide({name: losses for name, (losses, _) in found.items()})
        gain = f"{report['gain']:.3f} ± {report['standard_error']:.3f}" if report["lowest"] != default else ""
        print(f"| {workdir} ({len(found[default][0])}) | " + " | ".join(f"{found[n][1]:.3f}" for n in names)
              + f" | `{report['lowest']}` | {gain} | `{report['chosen']}` |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
