"""Files: radistill's own checkpoints and (later) interchange formats."""
