"""The code Orthanc runs in process, behind its own authentication (Orthanc's Python plugin).

Only the standard library: Orthanc runs it with the Python Debian built its plugin against
(3.11 on Debian 12, 3.13 on Debian 13), not the project's environment. ``serve`` copies this
package into the data folder (``DATA/front/plugin/``, :mod:`server.front.files`) with its
settings and a DICOM dictionary written from pydicom's; :mod:`.in_orthanc` registers, at
Orthanc's start:

- the request filter (:mod:`.policy`): which account may do what, on which host, through
  which door;
- QIDO-RS answered from Orthanc's index (:mod:`.qido`), for the front's ``/dicom-web``
  searches;
- WADO-URI with its query decoded, and the front's login check.

The modules import one another relatively, so the same files are the package
``server.front.plugin`` in the project (the unit tests import them from there) and a
package of their own inside Orthanc.
"""
