"""kemdy_tf: multimodal (speech + transcript) emotion recognition on the KEMDy20 layout.

Importing the package registers every custom Keras layer, so
`keras.saving.load_model(path)` works on the `.keras` archives a run writes.
"""

__version__ = "0.1.0"
