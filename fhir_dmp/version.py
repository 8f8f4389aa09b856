"""The package version (its own module: the capability reads it without importing the app)."""

__version__ = "0.1.0"
