"""Threadgate: a self-hostable LLM chat gateway (keys with hard caps, threads, tools, search, usage)."""

__version__ = "0.1.0"
