"""kemdy_tf: multimodal (speech + transcript) emotion recognition on the KEMDy20 layout.

After `import kemdy_tf`, `keras.saving.load_model(path)` works on the `.keras`
archives a run writes, compiled or not: the custom layers and the training metrics
(`SparseMacroF1`, `SparseBalancedAccuracy`) register as soon as Keras is imported (at
once if it already is). Data-only tools (the reader, the synthetic generator, the
analysis) therefore never pay for importing Keras and TensorFlow.
"""

import importlib.abc
import importlib.util
import os
import sys

__version__ = "0.1.0"

# TensorFlow's C++ start-up chatter (CUDA probing on a CPU machine, oneDNN notes) hides
# our own output and is nothing a user can act on; a user's setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _register_layers() -> None:
    from kemdy_tf import models  # noqa: F401  (registration is an import side effect)
    from kemdy_tf.models import metrics  # noqa: F401  the training metrics, in compiled archives


class _RegisterLayersWithKeras(importlib.abc.MetaPathFinder):
    """Runs `_register_layers` right after the first `import keras` finishes."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)  # one shot, and lets find_spec below see the real finders
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _register_layers()

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    _register_layers()
elif not any(isinstance(finder, _RegisterLayersWithKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterLayersWithKeras())
