"""``vindr-convert``, the command line: the only layer that uses both the converter library
(:mod:`converter`) and the PACS side (:mod:`server`).

- :mod:`.app`: the typer application, ``main()``; commands are registered here and import
  the libraries only when they run, so ``vindr-convert --help`` stays fast.
- :mod:`.console`: printing, the progress bar, errors -> exit codes, the log file.
- :mod:`.convert_commands`: ``synth``, ``convert``, ``validate``, ``export``.
- :mod:`.pacs_commands`: ``serve``, ``stop``, ``load``, ``verify``, ``demo``.
- :mod:`.demo`: the main job on an embedded default, end to end.
"""
