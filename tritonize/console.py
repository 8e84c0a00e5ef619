"""One rich console for every subcommand."""

from rich.console import Console

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)
