"""kemdy_tf: multimodal (speech + transcript) emotion recognition on the KEMDy20 layout.

Importing the package registers every custom Keras layer, so
`keras.saving.load_model(path)` works on the `.keras` archives a run writes.
"""

import os

__version__ = "0.1.0"

# TensorFlow's C++ start-up chatter hides our own output; a user's setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Feature-cache worker processes set this: they need numpy and librosa, not Keras.
if os.environ.get("KEMDY_TF_LIGHT_IMPORT") != "1":
    from kemdy_tf import models  # noqa: F401  (registers the custom layers)
