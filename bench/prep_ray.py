#!/usr/bin/env python
"""`sftprep build --engine ray` against `--engine local` on one machine: a correctness-and-overhead
measurement, not a speed claim (on one machine Ray can only add cost; it pays on many).

Each build is its own `sftprep build ... -q` process (wall clock: interpreter start and imports
included; peak memory as bench/prep.py measures it: the largest process's RSS and the summed PSS
of the process tree, which for Ray includes its raylet, GCS and the actors):

  local     --engine local (--num-proc 0: as the build chooses)
  ray       --engine ray, a Ray started on this machine for the build (--ray-workers 0: one per CPU)
  tiny      both engines on a one-conversation file: their difference is Ray's fixed start-up cost
            (start Ray, start the actors, ship the tokenizer, check versions; stop it all)

and the two full builds must agree: the same shard sha256s and the same manifest but for
created_at, elapsed_s, engine, workers, the engine's config keys and tokenizer.encoder_hf_rows
(rows HF encoded while fastokens was still loading in each process: a matter of timing that
varies between two local builds too; the ids do not depend on it). The script exits 1 if not.

    python bench/prep_ray.py                    # 7000 synthetic conversations (bench/make_synthetic.py)
    python bench/prep_ray.py --rows 70000       # 10x
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_synthetic  # noqa: E402
from prep import DEFAULT_TOKENIZER, machine, run_measured, versions  # noqa: E402

IGNORED = ("created_at", "elapsed_s", "engine", "workers")
ENGINE_KEYS = ("engine", "ray_address", "ray_workers", "out")


def build(source: Path, out: Path, engine: str, a, work: Path) -> dict:
    exe = Path(sys.executable).parent / "sftprep"
    cmd = [str(exe) if exe.exists() else "sftprep", "build", str(source)]
    cmd += ["--tokenizer", str(a.tokenizer), "--out", str(out), "--max-length", str(a.max_length)]
    cmd += ["--engine", engine, "-q"]
    log = work / f"{out.name}.log"
    measured = run_measured(cmd, dict(os.environ), log, a.timeout)
    if measured["rc"] != 0:
        raise SystemExit(f"{engine} build failed (rc {measured['rc']}):\n{log.read_text()[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    measured.update(
        manifest=manifest,
        build_s=manifest["elapsed_s"],
        workers=manifest["workers"],
        tokens=manifest["splits"]["train"]["tokens"],
    )
    return measured


def comparable(manifest: dict) -> dict:
    manifest = {k: v for k, v in manifest.items() if k not in IGNORED}
    manifest["config"] = {k: v for k, v in manifest["config"].items() if k not in ENGINE_KEYS}
    manifest["tokenizer"] = {
        k: v for k, v in manifest["tokenizer"].items() if k != "encoder_hf_rows"
    }
    return manifest


def shard_hashes(manifest: dict) -> list:
    return [s["sha256"] for split in manifest["splits"].values() for s in split["shards"]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=7000, help="synthetic conversations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--timeout", type=float, default=3600)
    a = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="prep-ray-"))
    try:
        source, tiny = work / "synthetic.jsonl", work / "tiny.jsonl"
        make_synthetic.write_jsonl(str(source), a.rows, a.seed)
        with open(source, "rb") as handle:  # one line: this process stays small, and so its forks
            tiny.write_bytes(handle.readline())
        runs = {
            name: build(src, work / name, engine, a, work)
            for name, src, engine in (
                ("tiny-local", tiny, "local"),
                ("tiny-ray", tiny, "ray"),
                ("local", source, "local"),
                ("ray", source, "ray"),
            )
        }
        local, ray = runs["local"]["manifest"], runs["ray"]["manifest"]
        same_shards = shard_hashes(local) == shard_hashes(ray) != []
        same = same_shards and comparable(local) == comparable(ray)
        print(f"machine: {machine()}\nversions: {versions()}")
        print(
            f"data: {a.rows:,} synthetic conversations, {source.stat().st_size / 1e6:.1f} MB, "
            f"{runs['local']['tokens']:,} tokens; max length {a.max_length}, bfd"
        )
        print(
            f"{'run':<11} {'workers':>7} {'wall s':>7} {'build s':>8} {'RSS max MB':>10} {'PSS sum MB':>10}"
        )
        for name, r in runs.items():
            print(
                f"{name:<11} {r['workers']:>7} {r['wall_s']:>7.1f} {r['build_s']:>8.1f} "
                f"{r['rss_max_mb']:>10.0f} {r['pss_sum_mb']:>10.0f}"
            )
        fixed = runs["tiny-ray"]["wall_s"] - runs["tiny-local"]["wall_s"]
        print(f"Ray's fixed start-up cost (tiny-ray - tiny-local wall): {fixed:.1f} s")
        print(
            f"ray / local wall: {runs['ray']['wall_s'] / runs['local']['wall_s']:.2f}x; "
            f"after the fixed cost: {(runs['ray']['wall_s'] - fixed) / runs['local']['wall_s']:.2f}x"
        )
        print(
            f"identical shards ({len(shard_hashes(local))}, by sha256): {same_shards}; "
            f"identical manifests (engine fields and timing aside): {same}"
        )
        return 0 if same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
