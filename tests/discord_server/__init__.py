"""Test helpers around the sandbox's Discord-compatible server (`sandbox.discord`): pytest
fixtures, running the real bot and worker against it, and expectations on what it recorded."""
