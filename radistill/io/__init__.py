"""Files: radistill's own checkpoints and (later) interchange formats.

``io.checkpoint`` depends only on ``fields.base`` (the registry and config rules), so the
distill engine may use it to write its resumable checkpoints; exporters and importers of
foreign formats, which may depend on everything else, go beside it.
"""
