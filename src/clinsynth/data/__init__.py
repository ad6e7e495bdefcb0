"""Reading, encoding and simulating tables."""
