"""An interrupted build (Ctrl-C, SIGTERM, SIGHUP, SIGKILL, at any point) never harms the previous
build in its --out, leaves no process behind, and a rerun gives the clean build byte for byte."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BUNDLED_TOKENIZER, REPO
from tests.sftprep.build_checks import check_build, load_manifest

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "sftprep.cli", "build", "--tokenizer", str(BUNDLED_TOKENIZER)]
CLI += ["-q", "--num-proc", "2"]


def _small_source(tmp_path) -> Path:
    small = tmp_path / "small.jsonl"
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    small.write_text(json.dumps({"messages": chat}) + "\n")
    return small


def _big_source(tmp_path, rows: int = 20000) -> Path:
    row = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "Tell me about packing. " * 20},
                {"role": "assistant", "content": "Packing puts rows together. " * 40},
            ]
        }
    )
    src = tmp_path / "big.jsonl"
    src.write_text((row + "\n") * rows)
    return src


def _group_gone(pgid: int, wait_s: float = 10.0) -> bool:
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_an_interrupted_build_leaves_the_previous_build_intact_and_a_rerun_completes(tmp_path, sig):
    out = tmp_path / "out"
    small = _small_source(tmp_path)
    base = [*CLI, "--out", str(out)]
    subprocess.run(base + [str(small)], check=True, cwd=REPO)
    before = load_manifest(out)
    big = _big_source(tmp_path)
    proc = subprocess.Popen(
        base + [str(big), "--overwrite"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while not list(tmp_path.glob(".out.tmp-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # wait until the build is writing (its temporary folder exists)
    time.sleep(0.2)
    assert proc.poll() is None, (
        "the build finished before it could be interrupted; make the input bigger"
    )
    os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if sig != signal.SIGKILL:
        assert _group_gone(proc.pid), "worker processes outlived the interrupted build"
        assert (
            stderr.strip().count("\n") == 0
            and "interrupted" in stderr
            and "Traceback" not in stderr
        )
    assert load_manifest(out)["fingerprint"] == before["fingerprint"]
    check_build(out)
    subprocess.run(base + [str(big), "--overwrite"], check=True, cwd=REPO)
    assert load_manifest(out)["sources"][0]["rows_read"] == 20000
    assert not list(tmp_path.glob(".out.*")), "stale temporary folders are cleaned up"


def _shards(out: Path) -> dict:
    manifest = load_manifest(out)
    return {
        shard["path"]: (out / shard["path"]).read_bytes()
        for split in manifest["splits"].values()
        for shard in split["shards"]
    }


def _interpreter_startup() -> float:
    """Twice the longest of three bare starts of this interpreter with its site-packages: the time
    before any line of sftprep can run, with room for a busy machine."""
    runs = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        runs.append(time.monotonic() - started)
    return 2 * max(runs)


def _python(code: str) -> subprocess.CompletedProcess:
    """`code` run by a fresh interpreter in the repository, its output captured."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def _require_quit_while_starting(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert done.stderr == "interrupted while starting: nothing was written\n", done.stderr


def test_a_signal_while_the_cli_loads_gives_one_line_and_130():
    """Ctrl-C, SIGTERM or SIGHUP while the CLI's imports load (half a second before the build's own
    handling starts) ends it with one line and exit code 130, not a traceback from a library."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        code = (
            "import os, signal, time; import sftprep.cli_start; "
            f"os.kill(os.getpid(), {int(sig)}); time.sleep(10); import sftprep.cli"
        )
        _require_quit_while_starting(_python(code))


def test_the_cli_gives_the_signals_back_once_loaded():
    """Once sftprep.cli is imported, Ctrl-C is a KeyboardInterrupt again (caught by the build's
    clean-up) and SIGTERM has its previous handler: importing the CLI in a program changes nothing."""
    code = (
        "import signal; before = signal.getsignal(signal.SIGTERM); import sftprep.cli; "
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler; "
        "assert signal.getsignal(signal.SIGTERM) == before; "
        "print('ok')"
    )
    done = _python(code)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


def test_the_command_keeps_the_one_line_until_a_commands_own_handling_begins():
    """`sftprep` (cli.run) takes the signals again while typer builds its commands and parses the
    flags; `user_errors` (every command's clean-up) takes them back."""
    code = (
        "import os, signal, time; import sftprep.cli as cli; cli.cli_start.take_over()\n"
        "with cli.user_errors(): assert signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
        "cli.cli_start.take_over(); os.kill(os.getpid(), signal.SIGINT); time.sleep(10)"
    )
    _require_quit_while_starting(_python(code))


def test_importing_the_package_loads_nothing_heavy():
    """`import sftprep` (which `python -m sftprep.cli` runs before the CLI's first line) imports
    neither pyarrow nor numpy, so the window in which a signal is not yet the CLI's stays short;
    the public names still load on first use."""
    code = (
        "import sys, sftprep; heavy = {'pyarrow', 'numpy', 'sftprep.pipeline'} & set(sys.modules); "
        "assert not heavy, heavy; assert callable(sftprep.build) and sftprep.BuildConfig; "
        "assert 'sftprep.pipeline' in sys.modules; print(sftprep.__version__)"
    )
    done = _python(code)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr


def test_twenty_interrupts_at_random_points_never_harm_the_previous_build(tmp_path):
    """Ctrl-C or SIGKILL (of the whole process group, as the OOM killer or a node loss would), 20
    times in a row at seeded random points of a build: each time --out holds the previous build
    intact, or (killed after the rename) the new build complete; a rerun equals a clean build."""
    out, clean = tmp_path / "out", tmp_path / "clean"
    small = _small_source(tmp_path)
    big = _big_source(tmp_path, rows=6000)
    base = CLI
    subprocess.run(base + [str(small), "--out", str(out)], check=True, cwd=REPO)
    previous = load_manifest(out)["fingerprint"]
    started = time.monotonic()
    subprocess.run(base + [str(big), "--out", str(clean)], check=True, cwd=REPO)
    duration = time.monotonic() - started
    new = load_manifest(clean)["fingerprint"]
    # Until the interpreter has run site.py and reached sftprep/cli.py's first line, a signal is
    # Python's own (a traceback from site.py, say); the draws start after that.
    startup = _interpreter_startup()
    rng = random.Random(14)
    outcomes = []
    for attempt in range(20):
        sig = signal.SIGINT if attempt % 2 else signal.SIGKILL
        proc = subprocess.Popen(
            base + [str(big), "--out", str(out), "--overwrite"],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        time.sleep(rng.uniform(startup, duration))
        os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
        assert "Traceback" not in stderr, stderr
        assert _group_gone(proc.pid), f"attempt {attempt}: processes outlived the build"
        found = load_manifest(out)["fingerprint"]
        assert found in (previous, new), f"attempt {attempt}: --out holds neither build"
        check_build(out)
        if found == new:  # the signal came after the rename: the new build is whole; start over
            assert _shards(out) == _shards(clean)
            subprocess.run(
                base + [str(small), "--out", str(out), "--overwrite"], check=True, cwd=REPO
            )
        outcomes.append(found == previous)
    assert sum(outcomes) >= 10, (
        "most interrupts must land during the build, or the test proves little"
    )
    subprocess.run(base + [str(big), "--out", str(out), "--overwrite"], check=True, cwd=REPO)
    assert load_manifest(out)["fingerprint"] == new and _shards(out) == _shards(clean)
    assert not list(tmp_path.glob(".out.*")), (
        "temporary folders and locks of killed builds are cleaned up"
    )
