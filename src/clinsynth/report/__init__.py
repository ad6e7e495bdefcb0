"""Rendering of result objects: figures, and (later) the HTML release report."""
