"""The ``keyface`` command line: one entry point, one module per sub-command."""
