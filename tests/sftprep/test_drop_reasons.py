"""Drop reasons are one enum: every RowError uses one, and the README's table is that enum."""

import re

import pytest

from sftprep.drop_reasons import DESCRIPTIONS, DropReason
from sftprep.errors import RowError
from tests.conftest import REPO


def test_the_readme_table_is_the_enum():
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Drop reasons") : text.index("## Files")]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (.+) \|$", section, flags=re.M)
    assert rows == [(r.value, DESCRIPTIONS[r]) for r in DropReason] and len(rows) >= 20


def test_every_reason_is_described_and_no_reason_is_a_loose_string():
    assert set(DESCRIPTIONS) == set(DropReason)
    loose = []
    for path in (REPO / "sftprep").rglob("*.py"):
        for match in re.finditer(r'RowError\(\s*"', path.read_text()):
            loose.append(f"{path.relative_to(REPO)}:{match.start()}")
    assert loose == [], "RowError reasons must be DropReason members"


def test_row_errors_carry_the_plain_value_and_refuse_unknown_reasons():
    err = RowError(DropReason.UNKNOWN_ROLE, "x")
    assert (
        err.reason == "unknown_role"
        and type(err.reason) is str
        and str(err).endswith("[unknown_role]")
    )
    with pytest.raises(ValueError):
        RowError("not_a_reason", "x")
