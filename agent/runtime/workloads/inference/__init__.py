"""Inference runtimes: their profiles, their supervision, and the builtin runtime."""
