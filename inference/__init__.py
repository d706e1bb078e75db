"""Palicord inference: the PaliGemma 2 worker and the torch-free contract the bot imports.

Torch-free modules (safe for the bot): errors, tasks, intake, detection, annotate, settings,
jobs, keys, queue. Modules that import torch: engine, loading, worker's engine factory.
"""

__version__ = "0.1.0"
