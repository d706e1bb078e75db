"""Helpers shared by the test folders (fixtures live in the conftest.py files): the demo
model, hostile pictures, masks, Redis servers of the tests' own, the job queue and worker
processes, a browser, and the sandbox's Discord-compatible server."""
