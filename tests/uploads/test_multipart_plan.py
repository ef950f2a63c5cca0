from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uploads.validation import (
    MAX_PART_BYTES,
    MAX_PARTS,
    MAX_SINGLE_PUT_BYTES,
    MIN_PART_BYTES,
    InvalidInput,
    PartPlan,
    plan_upload,
)

MIB = 1024**2
GIB = 1024**3
TIB = 1024**4
DEFAULTS = {"threshold": 100 * MIB, "preferred_part_size": 64 * MIB, "max_size": 5 * TIB}


def plan(size: int | None, multipart: bool | None = None, **overrides: int) -> PartPlan | None:
    return plan_upload(size, multipart=multipart, **{**DEFAULTS, **overrides})


def assert_valid(result: PartPlan) -> None:
    """Every rule of R2 and S3 at once."""
    assert 1 <= result.part_count <= MAX_PARTS
    assert result.part_size <= MAX_PART_BYTES
    if result.part_count > 1:
        assert result.part_size >= MIN_PART_BYTES
    assert (result.part_count - 1) * result.part_size < result.size <= result.part_count * result.part_size
    last = result.part_length(result.part_count)
    assert 0 < last <= result.part_size
    assert (result.part_count - 1) * result.part_size + last == result.size


def test_small_files_and_unknown_sizes_are_single_puts():
    assert plan(None) is None
    assert plan(1) is None
    assert plan(100 * MIB) is None


def test_above_the_threshold_a_file_is_multipart():
    result = plan(100 * MIB + 1)
    assert result == PartPlan(size=100 * MIB + 1, part_size=64 * MIB, part_count=2)
    assert result.part_length(2) == 36 * MIB + 1


def test_exactly_5_gib_may_still_be_one_put_but_one_byte_more_may_not():
    assert plan(MAX_SINGLE_PUT_BYTES, multipart=False) is None
    with pytest.raises(InvalidInput) as refused:
        plan(MAX_SINGLE_PUT_BYTES + 1, multipart=False)
    assert refused.value.field == "size"
    assert_valid(plan(MAX_SINGLE_PUT_BYTES + 1))  # type: ignore[arg-type]


def test_5_gib_by_default_is_multipart_in_80_parts():
    result = plan(5 * GIB)
    assert result == PartPlan(size=5 * GIB, part_size=64 * MIB, part_count=80)


def test_ten_thousand_parts_of_5_mib_is_the_edge_of_the_smallest_part_size():
    edge = plan(5 * MIB * MAX_PARTS, preferred_part_size=5 * MIB)
    assert edge == PartPlan(size=5 * MIB * MAX_PARTS, part_size=5 * MIB, part_count=MAX_PARTS)
    over = plan(5 * MIB * MAX_PARTS + 1, preferred_part_size=5 * MIB)
    assert over is not None
    assert over.part_size == 6 * MIB
    assert_valid(over)


def test_5_tib_fits_in_at_most_10000_parts_and_one_byte_more_is_refused():
    result = plan(5 * TIB)
    assert result is not None
    assert_valid(result)
    assert result.part_size == 525 * MIB
    assert result.part_count == 9987
    with pytest.raises(InvalidInput) as refused:
        plan(5 * TIB + 1)
    assert refused.value.field == "size"
    assert "UPLOAD_MAX_SIZE" in refused.value.message


def test_a_multipart_upload_needs_a_size():
    with pytest.raises(InvalidInput) as refused:
        plan(None, multipart=True)
    assert refused.value.field == "size"


def test_a_small_file_may_be_multipart_in_one_part():
    assert plan(3 * MIB, multipart=True) == PartPlan(size=3 * MIB, part_size=3 * MIB, part_count=1)


def test_a_part_number_outside_the_plan_is_refused():
    result = plan(200 * MIB)
    assert result is not None
    for bad in (0, result.part_count + 1):
        with pytest.raises(InvalidInput):
            result.part_length(bad)


@given(
    size=st.integers(min_value=1, max_value=5 * TIB),
    preferred=st.integers(min_value=5, max_value=5 * 1024).map(lambda m: m * MIB),
)
def test_every_size_up_to_5_tib_gets_a_plan_that_r2_and_s3_accept(size, preferred):
    result = plan(size, multipart=True, preferred_part_size=preferred)
    assert result is not None
    assert_valid(result)
