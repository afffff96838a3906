"""The ``tierflow`` command."""
