"""Process helpers shared by the tests (tests/) and the benchmark (bench/).

Both start the real processes of the Procfile on loopback ports and wait for them; neither imports
the other, so the helpers for doing that live here, below both.
"""
