"""``python -m vindr_convert`` is ``vindr-convert``."""

from .app import main

main()
