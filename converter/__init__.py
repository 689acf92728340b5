"""vindr-dicom: repair the VinDr-Mammo release into standard DICOM objects.

The pipeline is visible in the module names: :mod:`converter.synth` makes a synthetic
release, :mod:`converter.release` reads one, :mod:`converter.repair` turns each image into
a Digital Mammography X-Ray Image (For Presentation), :mod:`converter.sr` and
:mod:`converter.seg` encode the annotations, :mod:`converter.pipeline` drives the whole
conversion, :mod:`converter.export` reads the annotations back from DICOM and
:mod:`converter.validate` checks every object written.  Code tables live in
:mod:`converter.codes`, UID rules in :mod:`converter.uids`.
"""

__version__ = "0.1.0"
