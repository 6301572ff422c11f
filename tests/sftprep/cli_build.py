"""`sftprep build SOURCE --tokenizer (bundled) --out OUT -q ...` through typer's CliRunner, the
one spelling of that command line for the tests that drive the CLI in-process."""

from typer.testing import CliRunner

from sftprep.cli import app
from tests.conftest import BUNDLED_TOKENIZER


def invoke_build(source, out, *args):
    """The CliRunner result of building `source` into `out` with the bundled tokenizer."""
    command = ["build", str(source), "--tokenizer", str(BUNDLED_TOKENIZER), "--out", str(out)]
    return CliRunner().invoke(app, [*command, "-q", *args])
