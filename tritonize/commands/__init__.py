"""Subcommands, one module per model family or job; each `register`s itself on the CLI's sub-apps."""
