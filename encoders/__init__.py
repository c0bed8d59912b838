"""Modality encoders behind one interface (:class:`mm_live.encoders.base.Encoder`):
``frame`` (EfficientNet-Lite0 / HF vision / tiny), ``audio`` (log-mel transformer / HF audio / tiny),
``comment`` (all-MiniLM-L6-v2 / HF text / tiny). This package imports only ``mm_live.errors``."""
