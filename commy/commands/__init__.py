"""Subcommands of the ``commy`` CLI: one module per group, each with ``add_commands``."""
