"""Test helpers around the sandbox's Discord-compatible server (`sandbox.discord`): running
the real bot and worker against it, and expectations on what it recorded. Its fixtures
(server, prefix, bot, worker) are in tests/conftest.py."""
