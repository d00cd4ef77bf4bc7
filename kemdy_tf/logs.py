"""What the command lines print: our own progress and warnings, not library chatter.

`quiet_logs()` is called first thing by `train.py`, `evaluate.py` and
`python -m kemdy_tf.export`. It keeps Python logging at WARNING for everything but
`kemdy_tf` (INFO: skipped stages, the feature cache), so absl's INFO lines (e.g.
SavedModel resource renames) and TensorFlow's retracing notes stay out, while
warnings a user can act on (a truncated clip, skipped rows) still show.
TensorFlow's C++ logs are silenced by `import kemdy_tf` (TF_CPP_MIN_LOG_LEVEL=3,
unless the user set it); the lines TF 2.21 writes before its logger starts ("Could not
find cuda drivers", "oneDNN custom operations are on") ignore that setting, so
`quiet_logs` imports TensorFlow with file descriptor 2 pointed at /dev/null. A failing
import still raises its Python exception as usual.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

FORMAT = "%(levelname)s %(name)s: %(message)s"


def quiet_logs(level: int = logging.INFO) -> None:
    """Our loggers at `level`, every other library at WARNING (TensorFlow at ERROR)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING, format=FORMAT)
    logging.getLogger("kemdy_tf").setLevel(level)
    logging.getLogger("absl").setLevel(logging.WARNING)
    # Batches are padded to their own length, so tf.functions retrace a few times by
    # design; TensorFlow's warning about it is noise here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    import_tensorflow_quietly()


@contextlib.contextmanager
def _stderr_to_devnull():
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly() -> None:
    """`import tensorflow` without the C++ lines it prints before its logger starts."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") not in ("2", "3"):
        return  # already loaded, or the user asked for TensorFlow's logs
    with _stderr_to_devnull():
        import tensorflow  # noqa: F401
