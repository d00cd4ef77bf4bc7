"""A finished run's models, loaded once for whatever reads them: the exports (SavedModel,
LiteRT) and the evaluation.

    trained = load_trained_run("runs/synthetic")                  # every stage with a model.keras
    trained = load_trained_run(workdir, ("audio", "text", "fusion"))
    trained.models["fusion"], trained.config, trained.tokenizer_path, trained.audio_front_end

The run is opened read-only (`kemdy_tf.run.open_run`); a model trained in mixed
precision is handed out in float32, as it is scored and served. A `TrainedRun` can also
be made from models in memory (tests, benchmarks): only `config`, `tokenizer_path` and
`models` are required.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from kemdy_tf import run as run_lib, stages as stages_lib
from kemdy_tf.config import RunConfig


class TrainedRunError(run_lib.RunError):
    """A run's models cannot be loaded (a stage not trained, a damaged archive)."""


@dataclasses.dataclass
class TrainedRun:
    """The models of a run and what reading them needs.

    `models` maps a stage name to its Keras model, or to None for an encoder whose
    rating the corpus has none of (its output is NaN in an export). `run` is the opened
    run when it was loaded from a workdir (its table and, when asked for, its features).
    """

    config: RunConfig
    tokenizer_path: Path
    models: dict
    audio_front_end: object = None  # Run.audio_front_end(): None for the seed's log-mel
    source: str | None = None  # where the models came from, recorded by the exports
    run: run_lib.Run | None = None
    # [2, F] speaker statistics for a clip whose speaker is not enrolled, when the models
    # read them (kemdy_tf.speaker_statistics: the training split's, pooled); else None.
    speaker_fallback: object = None

    @property
    def audio(self):
        return self.models.get("audio")

    @property
    def text(self):
        return self.models.get("text")

    @property
    def fusion(self):
        return self.models.get("fusion")


def load_trained_run(workdir: str | os.PathLike, stages=None, *, with_features: bool = False,
                     cache_dir=None) -> TrainedRun:
    """The run in `workdir` with the models of `stages` (default: every stage that has a
    `model.keras`, in report order).

    A named stage without its model.keras is an error, unless it is a rating encoder and
    the corpus has no ratings for it (then its model is None).

    Raises:
        RunError: the run's files are missing or unreadable (`open_run`).
        TrainedRunError: a stage's model is missing or cannot be loaded.
    """
    run = run_lib.open_run(workdir, cache_dir=cache_dir, with_features=with_features)
    return trained_run_of(run, stages)


def trained_run_of(run: run_lib.Run, stages=None) -> TrainedRun:
    """`load_trained_run` of a run already opened (`run.open_run`)."""
    import keras

    import kemdy_tf.models  # noqa: F401  registers the custom layers load_model needs
    from kemdy_tf.models import precision

    if stages is None:
        stages = list(run_lib.stage_folders(run.workdir, run_lib.MODEL))
    models = {}
    for stage in stages:
        path = run.model_path(stage)
        if not path.is_file():
            spec = stages_lib.get(stage)
            if not spec.is_classifier and not stages_lib.has_targets(run, spec.target):
                models[stage] = None  # no ratings in this corpus
                continue
            raise TrainedRunError(f"{path} is missing: train the {stage} stage ({spec.target}) first")
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as error:  # a damaged archive: name it, do not guess
            raise TrainedRunError(f"cannot load {path}: {type(error).__name__}: {error}") from error
        if precision.is_mixed(model):  # a mixed-precision checkpoint is read in float32
            model = precision.with_policy(model, "float32")
        models[stage] = model
    from kemdy_tf import speaker_statistics

    fallback = None
    if (Path(run.workdir) / speaker_statistics.FALLBACK_FILE).is_file():
        try:
            fallback = speaker_statistics.read_fallback(run.workdir, None)
        except speaker_statistics.SpeakerStatisticsError as error:
            raise TrainedRunError(str(error)) from None
    return TrainedRun(run.config, run.tokenizer_path, models, run.audio_front_end(),
                      str(Path(run.workdir).resolve()), run, fallback)
