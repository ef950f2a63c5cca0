"""uploads.munge gives CKAN's own munge_filename answer (ckanext-s3filestore keys files by it)."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from uploads.munge import munge_filename

REPO = Path(__file__).resolve().parents[2]
CKAN_PYTHON = REPO / ".ckan" / "venv" / "bin" / "python"

# Printed by ckan.lib.munge.munge_filename of CKAN 2.12.0 (.ckan/venv), for each input.
CKAN_2_12_ANSWERS = [
    ("Report.CSV", "report.csv"),
    ("data file (final) v2.csv", "data-file-final-v2.csv"),
    ("Ärger über Öl.xlsx", "arger-uber-ol.xlsx"),
    ("a", "a__"),
    ("ab", "ab_"),
    (".csv", ".csv"),
    ("..", ".._"),
    ("x.", "x_."),
    ("ﬁle—name.txt", "lename.txt"),
    ("straße.json", "strasse.json"),
    ("dir/sub/Name.GeoJSON", "name.geojson"),
    ("C:\\Users\\me\\file.csv", "cusersmefile.csv"),
    ("  spaced  out .csv ", "spaced-out-.csv"),
    ("---a---b---.csv", "-a-b-.csv"),
    ("a" * 150 + ".csv", "a" * 96 + ".csv"),
    ("b.superlongextensionthatistoolong", "b.superlongextensionth"),
    ("..hidden", "..hidden"),
    ("日本語.csv", ".csv"),
    ("", "___"),
    ("émoji 😀.csv", "emoji-.csv"),
    ("name.tar.gz", "name.tar.gz"),
    ("ÆØÅ æøå.pdf", "aeoa-aeoa.pdf"),
    ("%20encoded%2F.csv", "20encoded2f.csv"),
    ("tab\there.csv", "tabhere.csv"),
]


@pytest.mark.parametrize(("name", "expected"), CKAN_2_12_ANSWERS)
def test_recorded_ckan_answers(name: str, expected: str) -> None:
    assert munge_filename(name) == expected


@pytest.mark.parametrize(("name", "expected"), CKAN_2_12_ANSWERS)
def test_munged_names_stay_as_they_are(name: str, expected: str) -> None:
    # CKAN munges the stored name again on download: the key must not move.
    assert munge_filename(expected) == expected


_CKAN_SCRIPT = """
import json, sys
from ckan.lib.munge import munge_filename
print(json.dumps([munge_filename(n) for n in json.load(sys.stdin)]))
"""


def test_same_answers_as_the_installed_ckan() -> None:
    """Random names through the real CKAN's function (the local CKAN's venv, when installed)."""
    if not CKAN_PYTHON.exists():
        pytest.skip("no local CKAN installed (.ckan/venv): `python3 scripts/local_ckan.py install` provides it")
    rnd = random.Random(14)
    alphabet = "aZ09 ._-/\\()[]%+ÄäßÆøÿÞ€😀日\t-"
    names = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 130))) for _ in range(500)]
    out = subprocess.run(
        [str(CKAN_PYTHON), "-c", _CKAN_SCRIPT],
        input=json.dumps(names),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    ckan_answers = json.loads(out.stdout)
    assert len(ckan_answers) == len(names)
    mismatches = [(n, c, munge_filename(n)) for n, c in zip(names, ckan_answers, strict=True) if munge_filename(n) != c]
    assert mismatches == []
