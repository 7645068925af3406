"""cachelayer: make Replicate model outputs permanent."""

__version__ = "0.1.0"
