"""The DICOM data dictionary, as far as QIDO-RS needs it: keyword <-> tag, and each VR.

Inside Orthanc there is no pydicom: ``serve`` writes pydicom's dictionary (PS3.6, as
pydicom ships it; :func:`server.front.files.pydicom_dictionary`) to a JSON file when it
prepares the front (:meth:`Dictionary.dump`), and the in-Orthanc code reads it back
(:meth:`Dictionary.load`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path


class Dictionary:
    """Keyword -> (tag, VR) of the standard attributes."""

    def __init__(self, entries: Mapping[str, tuple[int, str]]) -> None:
        self._by_keyword = {k: (int(tag), str(vr)) for k, (tag, vr) in entries.items()}
        self._by_tag = {tag: k for k, (tag, _) in self._by_keyword.items()}

    def __len__(self) -> int:
        return len(self._by_keyword)

    def tag_of(self, keyword: str) -> int | None:
        """The tag of ``keyword`` (None when not a standard keyword)."""
        entry = self._by_keyword.get(keyword)
        return entry[0] if entry else None

    def keyword_of(self, tag: int) -> str | None:
        """The keyword of ``tag`` (None when not a standard attribute)."""
        return self._by_tag.get(tag)

    def vr_of(self, keyword: str) -> str | None:
        """The VR of ``keyword`` as PS3.6 gives it (``US or SS`` for some)."""
        entry = self._by_keyword.get(keyword)
        return entry[1] if entry else None

    def dump(self, path: Path) -> None:
        """Write it as JSON to ``path``."""
        data = {k: [tag, vr] for k, (tag, vr) in sorted(self._by_keyword.items())}
        Path(path).write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Dictionary:
        """Read a file written by :meth:`dump`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls({k: (tag, vr) for k, (tag, vr) in data.items()})
