from __future__ import annotations

import uuid

import pytest

from uploads.validation import (
    InvalidInput,
    build_key,
    clean_content_type,
    clean_filename,
    clean_resource_id,
    clean_sha256,
    clean_size,
    parse_key,
    safe_key_name,
)

RESOURCE = "3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab"


def test_it_canonicalises_resource_ids():
    assert clean_resource_id(" 3F1B0C8E-2A4D-4C6E-9B1A-0123456789AB ") == RESOURCE


@pytest.mark.parametrize("value", ["", "abc", "../x", "3f1b0c8e-2a4d-4c6e-9b1a-0123456789a/"])
def test_it_refuses_resource_ids_that_are_not_uuids(value):
    with pytest.raises(InvalidInput) as exc:
        clean_resource_id(value)
    assert exc.value.field == "resource_id"


@pytest.mark.parametrize("value", ["a/b.csv", "..", ".", "c:\\x.csv", "tab\there", "nul\x00", "rtl\u202e.csv", "  "])
def test_it_refuses_file_names_with_paths_or_control_characters(value):
    with pytest.raises(InvalidInput):
        clean_filename(value)


def test_it_keeps_a_unicode_file_name_and_makes_its_key_part_safe():
    name = clean_filename("  Données 2024 (v2)+final.csv ")
    assert name == "Données 2024 (v2)+final.csv"
    assert safe_key_name(name) == "Données_2024_(v2)_final.csv"
    assert safe_key_name(".hidden") == "hidden"
    assert safe_key_name("...") == "file"


def test_it_builds_the_key_layout_and_parses_it_back():
    upload_id = uuid.uuid4()
    key = build_key("resources/api_uploads/", RESOURCE, upload_id, "my file.csv")
    assert key == f"resources/api_uploads/{RESOURCE}/{upload_id}/my_file.csv"
    assert parse_key("resources/api_uploads/", key) == (RESOURCE, upload_id)
    assert parse_key("resources/api_uploads/", "resources/api_uploads/x/y/z") is None
    assert parse_key("other/", key) is None


def test_it_refuses_a_name_whose_key_would_pass_1024_bytes():
    # 255 four-byte characters fit the name limit but not the key limit.
    name = clean_filename("\U0001d518" * 255)
    with pytest.raises(InvalidInput) as exc:
        build_key("resources/api_uploads/", RESOURCE, uuid.uuid4(), name)
    assert "1024" in exc.value.message


@pytest.mark.parametrize(
    "value", ["text/csv", "application/vnd.ms-excel", "text/csv; charset=utf-8", 'text/plain; charset="utf-8"']
)
def test_it_accepts_mime_types(value):
    assert clean_content_type(value) == value


@pytest.mark.parametrize("value", ["", "csv", "text/", "/csv", "text/csv\r\nX-Evil: 1", "a" * 300 + "/b"])
def test_it_refuses_what_is_not_a_mime_type(value):
    with pytest.raises(InvalidInput):
        clean_content_type(value)


def test_a_size_must_be_positive_and_storable():
    assert clean_size(None) is None
    assert clean_size(5 * 1024**3 + 1) == 5 * 1024**3 + 1
    for bad in (0, -1, 2**63):
        with pytest.raises(InvalidInput):
            clean_size(bad)


def test_it_normalises_sha256_digests():
    assert clean_sha256("AB" * 32) == "ab" * 32
    assert clean_sha256(None) == ""
    with pytest.raises(InvalidInput):
        clean_sha256("ab" * 31)


def test_the_forbidden_name_ranges_are_exactly_the_control_and_format_characters():
    import sys
    import unicodedata

    from uploads.validation import FORBIDDEN_NAME_RANGES

    listed = {code for lo, hi in FORBIDDEN_NAME_RANGES for code in range(lo, hi + 1)}
    expected = {
        code for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) in {"Cc", "Cf", "Zl", "Zp"}
    }
    assert listed == expected


@pytest.mark.parametrize(
    "value", ["...", " . ", "3f1b0c8e2a4d4c6e9b1a0123456789ab", "{3f1b0c8e-2a4d-4c6e-9b1a-0123456789ab}"]
)
def test_it_refuses_names_of_only_dots_and_resource_ids_in_other_uuid_spellings(value):
    with pytest.raises(InvalidInput):
        clean_filename(value) if "." in value else clean_resource_id(value)


def test_a_content_type_may_not_break_its_header_across_lines():
    assert clean_content_type("text/csv ;\tcharset=utf-8") == "text/csv ;\tcharset=utf-8"
    for bad in ("text/csv\n;charset=utf-8", "text/csv;\x0bq=1", "text/csv\r\n; a=b"):
        with pytest.raises(InvalidInput):
            clean_content_type(bad)
