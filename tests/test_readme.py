"""The README's file map is the tree: every module is listed once, and every listed file exists."""

import re

import pytest

from tests.conftest import REPO


def test_the_file_map_lists_every_module_and_nothing_else():
    text = (REPO / "README.md").read_text()
    block = text[text.index("## Files") :].split("```")[1]
    listed = {line.split()[0] for line in block.strip().splitlines()}
    modules = {
        str(p.relative_to(REPO))
        for package in ("schemas", "sftprep", "sfttrain")
        for p in (REPO / package).rglob("*.py")
        if p.name != "__init__.py"
    }
    assert modules, "guard: the packages hold modules"
    assert modules - listed == set(), "modules missing from the README's file map"
    missing = {
        f
        for f in listed
        if re.match(r"(schemas|sftprep|sfttrain)/.*\.py$", f) and not (REPO / f).is_file()
    }
    assert missing == set(), "files in the README's map that do not exist"


@pytest.mark.slow  # runs a whole collection (15 s); CI runs the slow tier too
def test_every_test_file_is_collected():
    """Guard against a test folder pytest skips (by default it ignores folders named `build`)."""
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "slow or not slow",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    # `path::test` lines, or `path: N` with pyproject's -q added (either form names the file)
    collected = {re.split(r"::|: ", line)[0] for line in done.stdout.splitlines() if ".py" in line}
    files = {
        str(p.relative_to(REPO)) for d in ("tests", "bench") for p in (REPO / d).rglob("test_*.py")
    }
    assert files and files - collected == set(), "test files pytest does not collect"
