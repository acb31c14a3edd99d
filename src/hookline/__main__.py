"""``python -m hookline`` runs the CLI."""

from hookline.cli import main

main()
