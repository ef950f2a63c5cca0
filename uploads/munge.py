"""CKAN's file-name munging (``ckan.lib.munge.munge_filename``, CKAN 2.9 to 2.12), reimplemented.

ckanext-s3filestore keys a resource's file as ``<storage path>/resources/<resource id>/<name>``
where ``name`` is ``munge_filename`` of the resource's URL basename, and CKAN's download route
looks the object up the same way. A file this service writes for that layout must be at exactly
that key, so the function has to give CKAN's answer for every input:
tests/uploads/test_munge.py checks it against CKAN's own function. The project never imports
CKAN (it is another application, with its own ~50 pinned dependencies).
"""

from __future__ import annotations

import posixpath
import re

# The same limits as ckan.lib.munge.
MAX_FILENAME_EXTENSION_LENGTH = 21
MAX_FILENAME_TOTAL_LENGTH = 100
MIN_FILENAME_TOTAL_LENGTH = 3

# Latin-1 letters CKAN turns into ASCII (substitute_ascii_equivalents); every other code point
# at or above 0x80 is dropped.
_ASCII_EQUIVALENTS: dict[int, str] = {
    **dict.fromkeys((0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5), "A"),
    0xC6: "Ae",
    0xC7: "C",
    **dict.fromkeys((0xC8, 0xC9, 0xCA, 0xCB), "E"),
    **dict.fromkeys((0xCC, 0xCD, 0xCE, 0xCF), "I"),
    0xD0: "Th",
    0xD1: "N",
    **dict.fromkeys((0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD8), "O"),
    **dict.fromkeys((0xD9, 0xDA, 0xDB, 0xDC), "U"),
    0xDD: "Y",
    0xDE: "th",
    0xDF: "ss",
    **dict.fromkeys((0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5), "a"),
    0xE6: "ae",
    0xE7: "c",
    **dict.fromkeys((0xE8, 0xE9, 0xEA, 0xEB), "e"),
    **dict.fromkeys((0xEC, 0xED, 0xEE, 0xEF), "i"),
    0xF0: "th",
    0xF1: "n",
    **dict.fromkeys((0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF8), "o"),
    **dict.fromkeys((0xF9, 0xFA, 0xFB, 0xFC), "u"),
    0xFD: "y",
    0xFE: "th",
    0xFF: "y",
}
_NOT_KEPT = re.compile(r"[^a-zA-Z0-9_. -]")
_DASHES = re.compile(r"-+")


def substitute_ascii_equivalents(text: str) -> str:
    """Latin-1 letters to their ASCII look-alikes; other non-ASCII characters dropped (as CKAN)."""
    return "".join(_ASCII_EQUIVALENTS.get(ord(char), "") if ord(char) >= 0x80 else char for char in text)


def _to_length(text: str, min_length: int, max_length: int) -> str:
    if len(text) < min_length:
        text += "_" * (min_length - len(text))
    return text[:max_length]


def munge_filename(filename: str) -> str:
    """The name CKAN stores and serves a file under: no path, lower case, ASCII, at most 100 characters."""
    # os.path.split on the POSIX machines CKAN runs on: only "/" separates.
    name = posixpath.split(filename)[1]
    name = name.lower().strip()
    name = substitute_ascii_equivalents(name)
    name = _NOT_KEPT.sub("", name).replace(" ", "-")
    name = _DASHES.sub("-", name)
    stem, ext = posixpath.splitext(name)
    ext = ext[:MAX_FILENAME_EXTENSION_LENGTH]
    stem = _to_length(stem, max(1, MIN_FILENAME_TOTAL_LENGTH - len(ext)), MAX_FILENAME_TOTAL_LENGTH - len(ext))
    return stem + ext
