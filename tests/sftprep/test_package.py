"""The package's public names do not shadow its modules: `sftprep.build` is the function, and the
stages import as `sftprep.stages.*` (a subpackage named `build` was shadowed by the function)."""

import importlib


def test_build_is_the_function_and_every_stage_imports_by_attribute():
    import sftprep

    assert callable(sftprep.build)
    stages = importlib.import_module("sftprep.stages")
    for name in (
        "sources",
        "formats",
        "render",
        "masks",
        "length_policy",
        "spill",
        "split",
        "pack",
        "shards",
    ):
        module = importlib.import_module(f"sftprep.stages.{name}")
        assert getattr(stages, name) is module
    exec("import sftprep.stages.chat_template as ct\nassert ct.compile_template")
