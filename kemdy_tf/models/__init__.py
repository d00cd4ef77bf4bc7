"""Keras models: audio encoder (arousal), text encoder (valence), fusion classifier (emotion).

Importing this package registers every custom layer (package name `kemdy_tf`), so
`keras.saving.load_model(path)` reads the `.keras` archives a run writes.
"""

from kemdy_tf.models import backbones, experts, known_transcripts, layers
from kemdy_tf.models.audio_encoder import build_audio_backbone, build_audio_encoder
from kemdy_tf.models.fusion import build_fusion_model
from kemdy_tf.models.text_encoder import build_text_backbone, build_text_encoder, load_embedding_weights

__all__ = [
    "backbones",
    "build_audio_backbone",
    "build_audio_encoder",
    "build_fusion_model",
    "build_text_backbone",
    "build_text_encoder",
    "experts",
    "known_transcripts",
    "layers",
    "load_embedding_weights",
]
