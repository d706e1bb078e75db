"""Palicord inference: the PaliGemma 2 worker service and the torch-free contract the bot
imports to talk to it.

Torch-free, for both programs (the bot may import these, and only these):
    errors.py tasks.py intake.py detection.py annotate.py    the vision contract
    queue/     the job queue: wire messages, keys, settings, Redis boundary, Lua scripts
GPU side (never imported by the bot):
    settings.py   EngineSettings and WorkerSettings
    engine/       the Engine protocol and the PaliGemma 2 engine (torch, transformers)
    worker/       `python -m inference.worker`
    cli.py        `python -m inference`, the offline CLI
    demo/         the tiny demo model's data and training recipe
"""

__version__ = "0.1.0"
