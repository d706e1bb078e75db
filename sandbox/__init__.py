"""Palicord's sandbox: the whole product on one machine, with a browser page that plays
Discord (`python -m sandbox`, which `make run` starts when no DISCORD_TOKEN is set)."""
