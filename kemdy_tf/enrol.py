"""Enrol a speaker: their statistics from a few of their clips, for an export that reads them.

    python -m kemdy_tf.enrol --model saved_models/kemdy clips_of_mina/ --out mina.json
    python -m kemdy_tf.enrol --model saved_models/kemdy a.wav b.wav c.wav d.wav e.wav

Writes (or prints) `{"speaker_functionals": [[F means], [F deviations]], "clips": N,
"enrolled": true}`: the `speaker_functionals` of a `serving_speaker` / `features_speaker`
request (docs/serving.md, "Speaker statistics"), computed by the export's own
`speaker_statistics` signature from the clips (at most `inference.MAX_ENROL_CLIPS`, each
cut to the model's window). Fewer than `speaker_statistics.MIN_CLIPS` clips enrol with a
warning; one clip does not enrol (exit status 1). An export whose models read no speaker
statistics is refused in one line. `predict.py` enrols by itself (a manifest's `speaker`
column, `--speaker`); this command is for clients that call TF Serving directly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    from kemdy_tf.data.audio import AudioError
    from kemdy_tf.inference import PredictError, load_clip, load_model
    from kemdy_tf.speaker_statistics import MIN_CLIPS

    parser = argparse.ArgumentParser(prog="python -m kemdy_tf.enrol", description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="+", help="audio files of one speaker, or a folder of them")
    parser.add_argument("--model", default="saved_models/kemdy", help="export base folder or version folder")
    parser.add_argument("--out", help="write the statistics to this JSON file (default: print them)")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model)
        if not model.reads_speaker_statistics:
            raise PredictError(f"{model.path}: its models read no speaker statistics (nothing to enrol)")
        files = [p for c in map(Path, args.clips) for p in (sorted(q for q in c.iterdir() if q.is_file())
                                                             if c.is_dir() else [c])]
        waves = []
        for path in files:
            try:
                waves.append(load_clip(path, model)[0])
            except AudioError as error:
                print(f"warning: {path}: skipped ({error.reason})", file=sys.stderr)
        statistics, used = model.enrol(waves)
    except PredictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if statistics is None:
        print(f"error: {used} usable clip(s): enrolment needs at least 2 ({MIN_CLIPS} or more recommended)",
              file=sys.stderr)
        return 1
    if used < MIN_CLIPS:
        print(f"warning: enrolled from {used} clips, fewer than {MIN_CLIPS}: the statistics are noisy",
              file=sys.stderr)
    text = json.dumps({"speaker_functionals": statistics.tolist(), "clips": used, "enrolled": True})
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"enrolled from {used} clips: {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    from kemdy_tf.logs import quiet_logs

    quiet_logs()
    sys.exit(main())
