"""Generative models, one file each, registered by name in ``registry.py``."""
