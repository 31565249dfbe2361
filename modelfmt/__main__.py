"""``python -m modelfmt`` runs the ``modelfmt`` command."""

from modelfmt.cli import main

main()
