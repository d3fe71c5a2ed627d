"""The multichat benchmark (`scripts/bench`); see run.py for how it works."""
