"""Runnable examples (`python examples/tutorial.py`, `python examples/webhook_receiver.py`),
importable as `examples.*` so the tests run exactly the code a reader runs."""
