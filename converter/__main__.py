"""``python -m converter`` runs the ``vindr-convert`` command line."""

from .cli import main

main()
