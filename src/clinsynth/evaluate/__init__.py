"""Evaluation: pure functions of frames that return small result objects."""
