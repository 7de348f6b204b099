"""The package version, in a module of its own so that any module can import it without
importing the package root (which imports the pipeline, which imports the store)."""

__version__ = "0.1.0"
