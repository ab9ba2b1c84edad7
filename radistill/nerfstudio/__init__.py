"""The nerfstudio plugin: radistill's kinds and its distillation as ``ns-train`` methods.

``methods.py`` is what nerfstudio's entry points load for every ``ns-*`` command, so it holds
only configuration; the model, pipeline and trainer are imported when a run is set up.
"""
