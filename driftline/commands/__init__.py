"""One module per ``driftline`` command: ``add_arguments`` and ``run``."""
