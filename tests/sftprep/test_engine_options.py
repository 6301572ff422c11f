"""--engine, --ray-address, --ray-workers without a Ray cluster: validated at the edge, outside the
fingerprint, and one line when Ray is missing or unreachable."""

import sys

import pytest

from sftprep import ray_engine
from sftprep.errors import ConfigError, SftprepError
from sftprep.pipeline import as_config, run_build
from tests.conftest import BUNDLED_TOKENIZER, EXAMPLES
from tests.sftprep.cli_build import invoke_build

CHAT = EXAMPLES / "data" / "chat.jsonl"


def _config(out, **keys) -> dict:
    return {"sources": [str(CHAT)], "tokenizer": str(BUNDLED_TOKENIZER), "out": str(out), **keys}


def test_ray_options_need_the_ray_engine_and_workers_are_not_negative(tmp_path):
    with pytest.raises(ConfigError) as err:
        as_config(_config(tmp_path / "o", ray_address="auto", ray_workers=-1))
    assert err.value.problems == [
        "--ray-workers is -1; it must be 0 (one per CPU) or more",
        "--ray-address needs --engine ray (config `engine: ray`)",
        "--ray-workers needs --engine ray (config `engine: ray`)",
    ]
    with pytest.raises(ConfigError, match="engine"):
        as_config(_config(tmp_path / "o", engine="spark"))


def test_the_engine_does_not_enter_the_fingerprint(tmp_path, monkeypatch):
    local = run_build(as_config(_config(tmp_path / "o")))
    assert not local.up_to_date and local.manifest.engine == "local" and local.manifest.workers >= 1

    def no_ray(*args):
        raise AssertionError("the up-to-date check must come before Ray")

    monkeypatch.setattr(ray_engine, "ray_encoders", no_ray)
    again = as_config(_config(tmp_path / "o", engine="ray", ray_address="auto", ray_workers=3))
    assert run_build(again).up_to_date


def test_ray_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ModuleNotFoundError
    result = invoke_build(CHAT, tmp_path / "o", "--engine", "ray")
    assert result.exit_code == 1
    assert result.output == "error: --engine ray needs Ray: pip install 'sftprep[ray]'\n"
    assert not (tmp_path / "o").exists()


class _Unreachable:
    """The part of Ray that _connect uses, with no cluster at the address."""

    @staticmethod
    def is_initialized() -> bool:
        return False

    @staticmethod
    def init(**options):
        raise ConnectionError(f"Could not find any running Ray instance at {options['address']}.")


def test_an_unreachable_ray_address_is_one_line():
    with pytest.raises(SftprepError) as err:
        ray_engine._connect(_Unreachable, "10.0.0.9:6379")
    assert str(err.value) == (
        "--ray-address 10.0.0.9:6379: cannot connect to a Ray cluster (Could not find any running "
        "Ray instance at 10.0.0.9:6379.); start one with `ray start --head` (then --ray-address "
        "auto), or leave --ray-address out to start Ray here"
    )
