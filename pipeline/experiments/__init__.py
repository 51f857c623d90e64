"""Experiments that drive the real pipeline end to end: `python -m pipeline.experiments ablation` (reward
ablation, `ablation.py`) with its reward-hacking probes (`hacking.py`)."""
