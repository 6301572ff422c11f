"""Checkpoints that a resume can trust: each save is sealed when complete, and `--resume` takes
the newest checkpoint that loads, saying which ones it skipped and why.

The checks are cheap and read no tensor data: trainer_state.json parses; every safetensors file's
header parses and its tensors end exactly at the end of the file (a truncated file fails); every
torch `.pt`/`.pth`/`.bin` file opens as a zip archive (a truncated or garbage file has no central
directory); and, for a sealed checkpoint, every file still has the size recorded when it was saved.
"""

import json
import re
import struct
import zipfile
from pathlib import Path

from transformers import TrainerCallback

SEAL = "sfttrain_complete.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class SealCheckpoints(TrainerCallback):
    """After the Trainer has written checkpoint-N, record its files and sizes in SEAL (written
    last, by rank 0): a checkpoint killed mid-save has no seal, or files of other sizes."""

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            sizes = {
                str(p.relative_to(folder)): p.stat().st_size
                for p in sorted(folder.rglob("*"))
                if p.is_file() and p.name != SEAL
            }
            tmp = folder / (SEAL + ".tmp")
            tmp.write_text(json.dumps({"step": state.global_step, "files": sizes}, indent=1))
            tmp.replace(folder / SEAL)


def checkpoint_problem(folder: Path) -> str:
    """Why this checkpoint cannot be resumed from ("" when it can)."""
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (the save did not finish)"
    try:
        json.loads(state.read_text())
    except (ValueError, UnicodeDecodeError):
        return "trainer_state.json is not valid JSON (truncated?)"
    seal = folder / SEAL
    if seal.is_file():
        try:
            recorded = json.loads(seal.read_text())["files"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return f"{SEAL} is unreadable"
        for name, size in recorded.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, {size} when it was saved"
    for path in sorted(folder.glob("*.safetensors")):
        if problem := _safetensors_problem(path):
            return f"{path.name}: {problem}"
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".pt", ".pth", ".bin")):
        if not zipfile.is_zipfile(path):
            return f"{path.name} is not a complete torch file (truncated or overwritten)"
    return ""


def choose_checkpoint(output_dir: Path, announce) -> tuple[str | None, list[str]]:
    """The newest checkpoint-N in output_dir that loads, and a line for each newer one skipped."""
    found = sorted(
        (int(m.group(1)), p)
        for p in Path(output_dir).iterdir()
        if p.is_dir() and (m := CHECKPOINT.match(p.name))
    )
    skipped = []
    for _, folder in reversed(found):
        problem = checkpoint_problem(folder)
        if not problem:
            for line in skipped:
                announce(f"--resume: skipping {line}")
            return str(folder), skipped
        skipped.append(f"{folder.name} ({problem})")
    return None, skipped


def _safetensors_problem(path: Path) -> str:
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > size - 8:
                return "header runs past the end of the file (truncated)"
            header = json.loads(handle.read(header_len))
    except (struct.error, ValueError, UnicodeDecodeError):
        return "not a safetensors file (garbage or truncated header)"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    if 8 + header_len + max(ends, default=0) != size:
        return "its tensors do not end at the end of the file (truncated)"
    return ""
