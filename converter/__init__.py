"""vindr-dicom: repair the VinDr-Mammo release into standard DICOM objects.

The pipeline is visible in the module names: :mod:`converter.synth` makes a synthetic
release, :mod:`converter.release` reads one, :mod:`converter.repair` turns each image into
a Digital Mammography X-Ray Image (For Presentation), :mod:`converter.annotations` encodes
the annotations (SR and SEG, each writer beside its reader, and the checks between them),
:mod:`converter.pipeline` drives the whole conversion, :mod:`converter.export` rebuilds the
CSVs from DICOM and :mod:`converter.validate` checks every object written. Code tables live
in :mod:`converter.codes`, naming rules (UIDs, patient, split, tracking identifiers, CSV
values) in :mod:`converter.naming`, the error model in :mod:`converter.errors`.

This package never imports :mod:`server` or the command line.
"""

__version__ = "0.1.0"
