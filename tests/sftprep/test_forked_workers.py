"""Worker processes forked from the build process (sftprep/pipeline.py `_can_fork`): they inherit
the tokenizer and the fast backend instead of loading them again, and build byte for byte what
spawned workers and one process build; a fork is refused once fastokens has encoded here; a
forked worker keeps the render time budget."""

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas.manifest import read_manifest
from sftprep import build, pipeline
from sftprep.stages import fast_encoder
from sftprep.stages.fast_encoder import choose_encoder, fast_encoder_problem, light_spec
from sftprep.stages.render_budget import RenderTimeout, timed_render
from sftprep.stages.tokenizer import load_tokenizer
from tests.conftest import TOKENIZER_NAMES, shared_tokenizer
from tests.sftprep.chat_corpus import chats

ROOT = Path(__file__).resolve().parents[2]


FRESH_BUILD = """
import json, sys
from sftprep import build, pipeline
methods = []
real = pipeline.in_worker_processes
def recording(*args):
    methods.append(args[-1])
    return real(*args)
pipeline.in_worker_processes = recording
if sys.argv[3] == "spawn":
    pipeline._can_fork = lambda tokenizer: False
build({"sources": [sys.argv[1]], "tokenizer": sys.argv[2], "out": sys.argv[4], "max_length": 512,
       "num_proc": 2, "on_error": "skip"})
print(json.dumps(methods))
"""


def _shards(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("*/*.arrow"))}


def _fresh_build(tmp_path, source, how):
    """A build with 2 workers in a fresh interpreter (this one may have run fastokens already,
    which rules a fork out), recording how the pool started its workers."""
    out = tmp_path / how
    tokenizer = str(shared_tokenizer("smollm2"))
    done = subprocess.run(
        [sys.executable, "-c", FRESH_BUILD, str(source), tokenizer, how, str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1]), _shards(out), read_manifest(out)


def test_forked_spawned_and_one_process_builds_are_byte_identical(tmp_path):
    source = tmp_path / "chats.jsonl"
    rows = [{k: v for k, v in c.items() if k != "kind"} for c in chats(2400)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fork_methods, forked, forked_manifest = _fresh_build(tmp_path, source, "fork")
    spawn_methods, spawned, _ = _fresh_build(tmp_path, source, "spawn")
    one = tmp_path / "one"
    build(
        {"sources": [str(source)], "tokenizer": str(shared_tokenizer("smollm2")), "out": str(one),
         "max_length": 512, "num_proc": 1, "on_error": "skip"}
    )  # fmt: skip
    assert (fork_methods, spawn_methods) == (["fork"], ["spawn"])
    assert forked and forked == spawned == _shards(one)
    assert forked_manifest.splits == read_manifest(one).splits
    assert forked_manifest.tokenizer.encoder == "fastokens"


def test_a_fork_is_refused_once_fastokens_has_encoded_here():
    tokenizer = load_tokenizer(str(shared_tokenizer("smollm2")), None, None)
    choose_encoder(tokenizer, "auto")
    before = fast_encoder._ENCODED_IN_THIS_PROCESS
    fast_encoder._ENCODED_IN_THIS_PROCESS = (
        False  # as in a fresh build process (nothing forks here)
    )
    try:
        assert pipeline._can_fork(tokenizer)
        assert not fast_encoder.fastokens_threads_started()
        key = tokenizer.fast.key  # built (or already loaded here), so the workers inherit it
        assert key in fast_encoder._CONSTRUCTED or key in fast_encoder._LOADED
        tokenizer.fast.get().encode_batch(["a few words"], add_special_tokens=False)
        assert fast_encoder.fastokens_threads_started() and not pipeline._can_fork(tokenizer)
    finally:
        fast_encoder._ENCODED_IN_THIS_PROCESS = before or fast_encoder._ENCODED_IN_THIS_PROCESS


def _busy_render(queue) -> None:
    def forever() -> str:
        end = time.monotonic() + 5
        while time.monotonic() < end:
            pass
        return "done"

    try:
        queue.put(timed_render(forever, 0.2))
    except RenderTimeout:
        queue.put("timed out")


def test_a_forked_worker_keeps_the_render_time_budget():
    assert timed_render(lambda: "x") == "x"  # starts this process's watchdog thread
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_busy_render, args=(queue,))
    child.start()
    child.join(10)
    assert queue.get(timeout=1) == "timed out"


def test_the_light_spec_qualifies_every_tokenizer_as_its_whole_json_does():
    for name in [*TOKENIZER_NAMES, "gptoss", "gemma2", "mistral", "llama2", "deepseek_v3"]:
        tokenizer = load_tokenizer(str(shared_tokenizer(name)), None, None)
        whole = json.loads(tokenizer.backend.to_str())
        light = light_spec(tokenizer.backend)
        assert fast_encoder_problem(light) == fast_encoder_problem(whole), name
        for part in ("normalizer", "pre_tokenizer"):
            assert light[part] == whole[part], (name, part)
        assert light["model"]["type"] == whole["model"]["type"], name


def test_ctrl_c_during_the_fast_encoder_load_interrupts_and_a_panic_does_not(monkeypatch):
    """The load now runs on the main thread before a fork, where Ctrl-C lands: it must stop the
    build, not be taken for a Rust panic (which makes the build use HF)."""
    import fastokens

    tokenizer = load_tokenizer(str(shared_tokenizer("smollm2")), None, None)

    class Panic(BaseException):  # what a pyo3 panic is: not an Exception
        pass

    for raised in (KeyboardInterrupt, Panic):

        def load(text, raised=raised):
            raise raised("during the load")

        monkeypatch.setattr(fastokens.Tokenizer, "from_json_str", staticmethod(load))
        if raised is KeyboardInterrupt:
            with pytest.raises(KeyboardInterrupt):
                fast_encoder._construct(tokenizer.backend)
        else:
            problem, backend = fast_encoder._construct(tokenizer.backend)
            assert backend is None and "fastokens cannot load" in problem
