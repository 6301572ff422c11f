#!/usr/bin/env python
"""sftprep at scale: `sftprep build` vs TRL `SFTTrainer` dataset preparation vs a render+tokenize ceiling.

Same data, tokenizer, max length (2048, BFD packing) and core count for all three, each method in
its own subprocess so that its peak memory is its own:

  sftprep  `sftprep build SRC --tokenizer T --out FRESH --max-length 2048 --packing bfd --num-proc N -q`,
           timed as the wall clock of the CLI process (interpreter start and imports included); its
           build time (manifest elapsed_s: tokenizer loading to manifest, imports excluded as they are
           for TRL and the ceiling) gives a second set of ratios.
  TRL      `datasets.load_dataset("json", ...)` + `trl.SFTTrainer(...)` with a tiny random-init Llama
           (hidden 64, 1 layer, the tokenizer's vocab), SFTConfig(packing=True, packing_strategy="bfd",
           max_length=2048, dataset_num_proc=N). Timed: load_dataset + SFTTrainer._prepare_dataset
           (measured by wrapping it; it is the chat-template/tokenize/labels/pack pipeline run inside
           __init__). Imports, model construction and the rest of __init__ are measured and shown but
           not counted. A fresh HF datasets cache per run, so nothing is reused from a previous run.
  sftprep-hf  the same build with `--encoder hf` (the HF tokenizers encoder: the "before" of the
           fast encoder, ids identical); `sftprep` itself runs with the default `--encoder auto`.
  ceil-fast  the ceiling below with fastokens' encode_batch_flat instead of HF's encode_batch: the
           new floor of any exact pipeline that renders and encodes.
  ceil+chk  ceil-fast plus the sampled check #17 requires of the fast encoder: every 64th text
           (sftprep's SAMPLE_EVERY) re-encoded by HF's encode_batch and compared. A floor below
           sftprep's own check, which also compares each worker's first encode call whole (128
           rows) and the probe texts; and still no masks, turn location, packing or writing.
  ceiling  read the JSONL, render every conversation with the tokenizer's compiled chat template
           (transformers' own compiled Jinja, checked equal to apply_chat_template(tokenize=False))
           and `tokenizers.Tokenizer.encode_batch` the texts, in N forked processes; no masks, no
           packing, no writing. Timed in-process (imports not counted).

Datasets:
  alpaca     the 999 real Alpaca rows of the shared assets repeated x20 (x20*scale); sftprep reads
             instruction/input/output; TRL gets the same rows converted the way sftprep maps them,
             {"prompt": [{"role": "user", ...}], "completion": [{"role": "assistant", ...}]}, with the
             tokenizer's own template (completion-only loss).
  synthetic  `bench/make_synthetic.py` multi-turn `messages` (7000*scale conversations, seed 0), with
             TRL's qwen2_5_training.jinja as the chat template of both sftprep (--chat-template) and
             TRL (assistant_only_loss=True), so both render the same text.

Peak memory: "RSS max" is the largest single process's peak RSS (wait4 ru_maxrss of the process
tree); "PSS sum" is the peak of the summed PSS of the whole process tree (workers included),
sampled every 0.1 s from /proc/PID/smaps_rollup.

    python bench/prep.py                        # both datasets at 1x, all methods
    python bench/prep.py --datasets synthetic --scale 1,10 --only sftprep,ceiling   # scaling
    python bench/prep.py --quick                # smoke test, under a minute
"""

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ASSETS = Path(os.environ.get("SFT_SHARED_ASSETS", ROOT.parent / "shared" / "assets"))
ALPACA_SRC = ASSETS / "data" / "alpaca_en_demo.json"
DEFAULT_TOKENIZER = ROOT / "examples" / "smollm2-tokenizer"
METHODS = ("sftprep", "sftprep_hf", "trl", "ceiling", "ceiling_fast", "ceiling_checked")
LABELS = {
    "sftprep": "sftprep",
    "sftprep_hf": "sftprep-hf",
    "trl": "TRL",
    "ceiling": "ceiling",
    "ceiling_fast": "ceil-fast",
    "ceiling_checked": "ceil+chk",
}


def trl_template_path() -> Path:
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("trl is not installed (bench-only dependency): pip install trl")
    return Path(spec.submodule_search_locations[0]) / "chat_templates" / "qwen2_5_training.jinja"


def alpaca_user(row: dict) -> str:
    """The user turn exactly as sftprep's alpaca mapping builds it (sftprep/formats.py)."""
    return row["instruction"] + ("\n\n" + row["input"] if row.get("input") else "")


# --------------------------------------------------------------------------------------------
# measuring a subprocess: wall clock, peak RSS of its largest process, peak summed PSS of its tree


def _children_map() -> dict:
    children: dict = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    return children


def _tree_pss_kb(root: int) -> int:
    children = _children_map()
    pids, i = [root], 0
    while i < len(pids):
        pids += children.get(pids[i], [])
        i += 1
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def run_measured(cmd: list, env: dict, log_path: Path, timeout: float) -> dict:
    load0 = os.getloadavg()[0]
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        peak_pss, last_sample = 0, 0.0
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            if now - t0 > timeout:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            if now - last_sample >= 0.1:
                peak_pss = max(peak_pss, _tree_pss_kb(proc.pid))
                last_sample = now
            time.sleep(0.01)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_s": wall,
        "rc": proc.returncode,
        "rss_max_mb": ru.ru_maxrss / 1024,
        "pss_sum_mb": peak_pss / 1024,
        "process_cpu_s": ru.ru_utime + ru.ru_stime,
        "load_before": load0,
        "load_after": os.getloadavg()[0],
    }


def _log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# the three methods (orchestrator side)


def run_sftprep(ds: dict, a, work: Path, encoder: str = "auto") -> dict:
    exe = Path(sys.executable).parent / "sftprep"
    out = Path(tempfile.mkdtemp(prefix="sftprep-out-", dir=work))
    shutil.rmtree(out)  # a fresh, absent --out
    cmd = [
        str(exe) if exe.exists() else "sftprep",
        "build",
        str(ds["sftprep_path"]),
        "--tokenizer",
        str(a.tokenizer),
        "--out",
        str(out),
        "--max-length",
        str(a.max_length),
        "--packing",
        "bfd",
        "--num-proc",
        str(a.sftprep_num_proc),
        "--encoder",
        encoder,
        "-q",
    ]
    if ds.get("template"):
        cmd[3:3] = ["--chat-template", str(ds["template"])]
    log = work / f"{ds['key']}-sftprep-{encoder}.log"
    m = run_measured(cmd, dict(os.environ), log, a.timeout)
    m["cmd"] = " ".join(cmd)
    if m["rc"] != 0:
        raise RuntimeError(f"sftprep failed (rc {m['rc']}):\n{_log_tail(log)}")
    man = json.loads((out / "manifest.json").read_text())
    split = man["splits"]["train"]
    src = man["sources"][0]
    m.update(
        tokens=split["tokens"],
        loss_tokens=split["loss_tokens"],
        rows=split["rows"],
        packing_efficiency=split["packing_efficiency"],
        examples=split["examples"],
        truncated=sum(s.get("truncated", 0) for s in man["sources"]),
        dropped=man.get("dropped", {}),
        build_s=man.get("elapsed_s"),
        seconds=m["wall_s"],
        cpu_s=m["process_cpu_s"],
        rows_read=src["rows_read"],
        encoder=man["tokenizer"].get("encoder"),
        encoder_fallback_rows=man["tokenizer"].get("encoder_fallback_rows"),
        encoder_hf_rows=man["tokenizer"].get("encoder_hf_rows"),
        out_mb=sum(s.get("bytes", s.get("size", 0)) for s in split["shards"]) / 1e6
        if split.get("shards")
        else None,
    )
    shutil.rmtree(out, ignore_errors=True)
    return m


def run_worker(method: str, ds: dict, a, work: Path) -> dict:
    result = work / f"{ds['key']}-{method}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_worker",
        method,
        "--data",
        str(ds["trl_path"] if method == "trl" else ds["sftprep_path"]),
        "--kind",
        ds["kind"],
        "--tokenizer",
        str(a.tokenizer),
        "--num-proc",
        str(a.num_proc),
        "--max-length",
        str(a.max_length),
        "--result",
        str(result),
        "--tmp",
        str(work),
    ]
    if ds.get("template"):
        cmd += ["--template", str(ds["template"])]
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_VERBOSITY="error",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
        TOKENIZERS_PARALLELISM="true",
    )
    log = work / f"{ds['key']}-{method}.log"
    m = run_measured(cmd, env, log, a.timeout)
    if m["rc"] != 0 or not result.exists():
        raise RuntimeError(f"{method} failed (rc {m['rc']}):\n{_log_tail(log)}")
    m.update(json.loads(result.read_text()))
    return m


# --------------------------------------------------------------------------------------------
# the workers (run in their own subprocess)


def cpu_now() -> float:
    """CPU seconds of this process plus its waited-for children (pool workers once joined)."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def worker_trl(w) -> dict:
    cache = tempfile.mkdtemp(
        prefix="hf-cache-", dir=w.tmp
    )  # fresh: no cached map() results to reuse
    os.environ["HF_DATASETS_CACHE"] = cache
    t0 = time.perf_counter()
    import datasets
    import pyarrow.compute as pc
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    import_s = time.perf_counter() - t0
    torch.set_num_threads(max(1, w.num_proc))
    tok = AutoTokenizer.from_pretrained(w.tokenizer)
    if w.template:
        tok.chat_template = Path(w.template).read_text()  # has {% generation %}: TRL uses it as is

    c0 = cpu_now()
    t = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=w.data, split="train", cache_dir=cache)
    load_s = time.perf_counter() - t
    load_cpu = cpu_now() - c0

    t = time.perf_counter()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=w.max_length,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model_s = time.perf_counter() - t

    prep = []

    prep_cpu = []

    class TimedSFTTrainer(SFTTrainer):
        def _prepare_dataset(self, *args, **kwargs):
            t, c = time.perf_counter(), cpu_now()
            out = super()._prepare_dataset(*args, **kwargs)
            prep.append(time.perf_counter() - t)
            prep_cpu.append(cpu_now() - c)
            return out

    args = SFTConfig(
        output_dir=os.path.join(cache, "run"),
        report_to="none",
        packing=True,
        packing_strategy="bfd",
        max_length=w.max_length,
        dataset_num_proc=w.num_proc if w.num_proc > 1 else None,
        assistant_only_loss=w.kind == "messages",
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
    )
    t = time.perf_counter()
    trainer = TimedSFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer_s = time.perf_counter() - t

    out = trainer.train_dataset
    table = out.data  # no shuffle (shuffle_dataset=False): no indices mapping
    assert out._indices is None
    tokens = int(pc.sum(pc.list_value_length(table.column("input_ids"))).as_py())
    labels = pc.list_flatten(table.column("labels"))
    loss_tokens = int(pc.sum(pc.not_equal(labels, -100)).as_py())
    rows = len(out)
    res = {
        "tokens": tokens,
        "loss_tokens": loss_tokens,
        "rows": rows,
        "rows_read": len(ds),
        "packing_efficiency": tokens / (rows * w.max_length),
        "import_s": import_s,
        "load_s": load_s,
        "model_s": model_s,
        "trainer_s": trainer_s,
        "prepare_s": sum(prep),
        "seconds": load_s + sum(prep),
        "cpu_s": load_cpu + sum(prep_cpu),
        "completion_only_loss": trainer.completion_only_loss,
        "assistant_only_loss": args.assistant_only_loss,
    }
    shutil.rmtree(cache, ignore_errors=True)
    return res


_CEIL = {}
CHECK_EVERY = 64
"""ceil+chk re-encodes every this-many-th text with HF (sftprep's fast_encoder.SAMPLE_EVERY)."""


def _ceiling_init(template: str, special: dict, kind: str) -> None:
    from transformers.utils.chat_template_utils import _compile_jinja_template

    _CEIL.update(template=_compile_jinja_template(template), special=special, kind=kind)


def _ceiling_conversation(line: str, kind: str) -> list:
    row = json.loads(line)
    if kind == "alpaca":
        return [
            {"role": "user", "content": alpaca_user(row)},
            {"role": "assistant", "content": row["output"]},
        ]
    return row["messages"]


def _ceiling_render(lines: list) -> list:
    """Parse and render a chunk of JSONL lines (in a pool worker, or inline)."""
    template, special, kind = _CEIL["template"], _CEIL["special"], _CEIL["kind"]
    return [
        template.render(
            messages=_ceiling_conversation(line, kind),
            tools=None,
            documents=None,
            add_generation_prompt=False,
            **special,
        )
        for line in lines
    ]


def _check_sample(backend, texts: list, ids, ends, rows_before: int) -> None:
    """ceil+chk's check: the texts whose row number is a multiple of CHECK_EVERY re-encoded by HF
    (`backend`) and compared with fastokens' `ids` (text i is ids[ends[i]:ends[i + 1]])."""
    sample = list(range(-rows_before % CHECK_EVERY, len(texts), CHECK_EVERY))
    reference = backend.encode_batch([texts[i] for i in sample], add_special_tokens=False)
    for i, enc in zip(sample, reference):
        assert ids[ends[i] : ends[i + 1]].tolist() == enc.ids, "fastokens != HF"


def worker_ceiling(w, fast: bool = False, checked: bool = False) -> dict:
    """Render in N forked processes (Python, so parallel only across processes); tokenize the rendered
    chunks as they come back with one Rust `encode_batch` per chunk in this process (parallel across
    cores by itself). The forked workers never touch the Rust tokenizer. `fast`: fastokens'
    encode_batch_flat instead of HF's encode_batch (the new ceiling with the fast encoder);
    `checked`: every 64th text also encoded by HF and compared (ceil+chk)."""
    import multiprocessing

    t0 = time.perf_counter()
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    import_s = time.perf_counter() - t0
    tok = AutoTokenizer.from_pretrained(w.tokenizer)
    template = Path(w.template).read_text() if w.template else tok.chat_template
    special = dict(tok.special_tokens_map)
    backend = Tokenizer.from_file(str(Path(w.tokenizer) / "tokenizer.json"))
    if fast:
        import fastokens
        import numpy as np

        flat = fastokens.Tokenizer.from_file(str(Path(w.tokenizer) / "tokenizer.json"))
    # the compiled template renders exactly what apply_chat_template(tokenize=False) renders
    _ceiling_init(template, special, w.kind)
    with open(w.data, encoding="utf-8") as f:
        sample = [next(f) for _ in range(50)]
    convs = [_ceiling_conversation(line, w.kind) for line in sample]
    expected = tok.apply_chat_template(convs, tokenize=False, chat_template=template)
    assert _ceiling_render(sample) == expected, "compiled template differs from apply_chat_template"

    t, c0 = time.perf_counter(), cpu_now()
    with open(w.data, encoding="utf-8") as f:
        lines = f.readlines()
    read_s = time.perf_counter() - t
    chunks = [lines[i : i + 1024] for i in range(0, len(lines), 1024)]
    tokens = untruncated = rows = 0
    encode_s = 0.0

    def consume(texts):
        nonlocal tokens, untruncated, rows, encode_s
        te = time.perf_counter()
        if fast:
            ids, offsets = flat.encode_batch_flat(texts)
            ends = np.frombuffer(offsets, dtype="<u8")
            lengths = np.diff(ends).tolist()
            if checked:
                _check_sample(backend, texts, np.frombuffer(ids, dtype="<u4"), ends, rows)
        else:
            lengths = [
                len(enc.ids) for enc in backend.encode_batch(texts, add_special_tokens=False)
            ]
        for n in lengths:
            untruncated += n
            tokens += min(n, w.max_length)
            rows += 1
        encode_s += time.perf_counter() - te

    if w.num_proc > 1:
        ctx = multiprocessing.get_context(
            "fork"
        )  # nothing Rust-parallel has run in this process yet
        with ctx.Pool(w.num_proc) as pool:  # inherits the compiled template through the fork
            for texts in pool.imap(_ceiling_render, chunks):
                consume(texts)
    else:
        for c in chunks:
            consume(_ceiling_render(c))
    total_s = time.perf_counter() - t
    return {
        "tokens_untruncated": untruncated,
        "tokens": tokens,
        "rows_read": rows,
        "read_s": read_s,
        "encode_s": encode_s,
        "render_s": total_s - read_s - encode_s,
        "import_s": import_s,
        "seconds": total_s,
        "cpu_s": cpu_now() - c0,
    }


def worker_main(argv: list) -> int:
    ap = argparse.ArgumentParser(prog="prep.py _worker")
    ap.add_argument("method", choices=("trl", "ceiling", "ceiling_fast", "ceiling_checked"))
    ap.add_argument("--data", required=True)
    ap.add_argument("--kind", required=True, choices=("alpaca", "messages"))
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--template")
    ap.add_argument(
        "--num-proc",
        type=int,
        default=2,
        help="processes for TRL (dataset_num_proc) and the ceiling's renderers",
    )
    ap.add_argument(
        "--sftprep-num-proc",
        type=int,
        default=None,
        help="sftprep --num-proc (default: --num-proc; 0 = sftprep's own choice)",
    )
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--result", required=True)
    ap.add_argument("--tmp", required=True)
    w = ap.parse_args(argv)
    res = (
        worker_trl(w)
        if w.method == "trl"
        else worker_ceiling(
            w,
            fast=w.method in ("ceiling_fast", "ceiling_checked"),
            checked=w.method == "ceiling_checked",
        )
    )
    Path(w.result).write_text(json.dumps(res))
    return 0


# --------------------------------------------------------------------------------------------
# data


def make_datasets(a, scale: int, work: Path) -> list:
    sys.path.insert(0, str(HERE))
    import make_synthetic

    out = []
    d = work / f"data-x{scale}"
    d.mkdir(parents=True, exist_ok=True)
    if "alpaca" in a.datasets:
        rows = json.loads(ALPACA_SRC.read_text())
        reps = a.alpaca_repeat * scale
        src, pc_ = d / f"alpaca-x{reps}.jsonl", d / f"alpaca-x{reps}.prompt-completion.jsonl"
        with open(src, "w", encoding="utf-8") as fa, open(pc_, "w", encoding="utf-8") as fp:
            for _ in range(reps):
                for r in rows:
                    fa.write(
                        json.dumps(
                            {
                                "instruction": r["instruction"],
                                "input": r["input"],
                                "output": r["output"],
                            },
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
                    fp.write(
                        json.dumps(
                            {
                                "prompt": [{"role": "user", "content": alpaca_user(r)}],
                                "completion": [{"role": "assistant", "content": r["output"]}],
                            },
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
        out.append(
            {
                "key": f"alpaca-x{reps}",
                "name": f"alpaca x{reps}",
                "kind": "alpaca",
                "sftprep_path": src,
                "trl_path": pc_,
                "template": None,
                "n_rows": len(rows) * reps,
                "scale": scale,
                "dataset": "alpaca",
            }
        )
    if "synthetic" in a.datasets:
        n = a.synthetic_rows * scale
        path = d / f"synthetic-{n}.jsonl"
        t = time.perf_counter()
        make_synthetic.write_jsonl(str(path), n, a.seed)
        print(
            f"[data] synthetic: {n:,} conversations, {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t:.0f}s",
            flush=True,
        )
        out.append(
            {
                "key": f"synthetic-{n}",
                "name": f"synthetic {n // 1000}k conv" if n >= 1000 else f"synthetic {n} conv",
                "kind": "messages",
                "sftprep_path": path,
                "trl_path": path,
                "template": trl_template_path(),
                "n_rows": n,
                "scale": scale,
                "dataset": "synthetic",
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# report


def _m(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e5 else f"{x / 1e3:.1f}k"


def ok(r) -> bool:
    return r is not None and "error" not in r


def report(ds: dict, res: dict, a) -> None:  # noqa: C901 - one flat table, a row per measured method
    print(
        f"\n== {ds['name']} (scale {ds['scale']}x, {ds['n_rows']:,} rows) | tokenizer {Path(a.tokenizer).name} | "
        f"--num-proc {a.num_proc} (sftprep {a.sftprep_num_proc}) | max-length {a.max_length}, bfd"
        + (f" | template {Path(ds['template']).name}" if ds.get("template") else "")
    )
    if a.repeat > 1:
        print(
            "   "
            + "; ".join(
                f"{LABELS[m]} seconds {r['all_seconds']} CPU s {r['all_cpu_s']}"
                for m, r in res.items()
                if ok(r)
            )
            + f" (best of {a.repeat} shown)"
        )
    print(
        f"   {'method':8} {'tokens':>11} {'loss tok':>11} {'rows':>7} {'pack eff':>8} {'seconds':>8} {'tok/s':>8} {'CPU s':>7} {'tok/CPU-s':>9} {'RSS max':>9} {'PSS sum':>9} {'load':>9}"
    )
    for meth, r in res.items():
        if "error" not in r and "cpu_s" not in r:
            r["cpu_s"] = r["process_cpu_s"]
        if "error" in r:
            print(f"   {LABELS[meth]:8} FAILED: {r['error'].splitlines()[0]}")
            continue
        loss = f"{r['loss_tokens']:,}" if "loss_tokens" in r else "-"
        rows = f"{r['rows']:,}" if "rows" in r else "-"
        eff = f"{r['packing_efficiency']:.4f}" if "packing_efficiency" in r else "-"
        print(
            f"   {LABELS[meth]:8} {r['tokens']:>11,} {loss:>11} {rows:>7} {eff:>8} {r['seconds']:>8.2f} {_m(r['tokens'] / r['seconds']):>8} "
            f"{r['cpu_s']:>7.1f} {_m(r['tokens'] / r['cpu_s']):>9} {r['rss_max_mb']:>7.0f}MB {r['pss_sum_mb']:>7.0f}MB {r['load_before']:>4.1f}>{r['load_after']:<4.1f}"
        )
    s, t, c = res.get("sftprep"), res.get("trl"), res.get("ceiling")
    if ok(s):
        print(
            f"   sftprep: CLI wall {s['wall_s']:.2f}s = build {s['build_s']:.2f}s (manifest elapsed_s) + {s['wall_s'] - s['build_s']:.2f}s interpreter/imports/CLI; "
            f"truncated {s['truncated']}, dropped {s['dropped'] or 'none'}"
        )
    if ok(t):
        print(
            f"   TRL: load_dataset {t['load_s']:.2f}s + _prepare_dataset {t['prepare_s']:.2f}s counted; not counted: imports {t['import_s']:.1f}s, "
            f"model {t['model_s']:.2f}s, rest of SFTTrainer.__init__ {t['trainer_s'] - t['prepare_s']:.2f}s; "
            f"completion_only_loss={t['completion_only_loss']}, assistant_only_loss={t['assistant_only_loss']}"
        )
    if ok(c):
        print(
            f"   ceiling: read {c['read_s']:.2f}s, encode_batch {c['encode_s']:.2f}s, waiting on rendering {c['render_s']:.2f}s; "
            f"untruncated tokens {c['tokens_untruncated']:,} (tokens column: each capped at {a.max_length}); imports {c['import_s']:.1f}s not counted"
        )
    if ok(s) and ok(t):
        diff = (t["tokens"] - s["tokens"]) / s["tokens"]
        ldiff = (t["loss_tokens"] - s["loss_tokens"]) / s["loss_tokens"]
        flag = "" if abs(diff) < 0.01 else "  <-- MORE THAN 1% APART"
        print(
            f"   same tokens? sftprep {s['tokens']:,} vs TRL {t['tokens']:,} ({diff:+.3%}); loss tokens {s['loss_tokens']:,} vs {t['loss_tokens']:,} ({ldiff:+.2%}){flag}"
        )
    if ok(s) and ok(c):
        diff = (c["tokens"] - s["tokens"]) / s["tokens"]
        print(f"   ceiling vs sftprep tokens: {c['tokens']:,} vs {s['tokens']:,} ({diff:+.3%})")
    parts = []
    for meth in METHODS:
        r = res.get(meth)
        if ok(r):
            parts.append(
                f"{LABELS[meth]} {_m(r['tokens'] / r['seconds'])} tok/s ({r['seconds']:.1f}s, {r['pss_sum_mb']:.0f}MB)"
            )
    line = f"{ds['name']}: " + " | ".join(parts)
    if ok(s) and ok(t):
        line += (
            f" | ratio sftprep/TRL {(s['tokens'] / s['seconds']) / (t['tokens'] / t['seconds']):.1f}x"
            f" (build {(s['tokens'] / s['build_s']) / (t['tokens'] / t['seconds']):.1f}x;"
            f" per CPU-s {(s['tokens'] / s['cpu_s']) / (t['tokens'] / t['cpu_s']):.1f}x)"
        )
    if ok(s) and ok(c):
        line += (
            f" | sftprep/ceiling {(s['tokens'] / s['seconds']) / (c['tokens'] / c['seconds']):.2f}"
            f" (build {(s['tokens'] / s['build_s']) / (c['tokens'] / c['seconds']):.2f};"
            f" per CPU-s {(s['tokens'] / s['cpu_s']) / (c['tokens'] / c['cpu_s']):.2f})"
        )
    print(line, flush=True)
    print_ratios(res)
    if ok(s) and (ok(t) or ok(c)):
        print(
            "   ratios: first on sftprep's CLI wall (interpreter start and imports included), then on its build time\n"
            "   (manifest elapsed_s: imports excluded, as they are for TRL and the ceiling; tokenizer loading included)",
            flush=True,
        )


def print_ratios(res: dict) -> None:
    """sftprep against its HF-encoder self, TRL and the fast ceiling; the fast ceiling against HF's."""
    s = res.get("sftprep")
    rate = {m: r["tokens"] / r["seconds"] for m, r in res.items() if ok(r)}
    build_rate = {m: r["tokens"] / r["build_s"] for m, r in res.items() if ok(r) and "build_s" in r}
    pairs = [("sftprep", "sftprep_hf"), ("sftprep", "trl"), ("sftprep", "ceiling_fast"),
             ("sftprep", "ceiling_checked"), ("ceiling_checked", "ceiling_fast"),
             ("ceiling_fast", "ceiling")]  # fmt: skip
    ratios = [
        f"{LABELS[x]}/{LABELS[y]} {rate[x] / rate[y]:.2f}x"
        + (
            f" (build {build_rate[x] / rate[y]:.2f}x)"
            if x in build_rate and y not in build_rate
            else ""
        )
        + (
            f" (build {build_rate[x] / build_rate[y]:.2f}x)"
            if x in build_rate and y in build_rate
            else ""
        )
        for x, y in pairs
        if x in rate and y in rate
    ]
    if ratios:
        print(f"   ratios: {'; '.join(ratios)}", flush=True)
    if ok(s):
        print(
            f"   sftprep encoder: {s.get('encoder')}; rows hf encoded: {s.get('encoder_hf_rows')} "
            f"(while fastokens loaded, or handed back: {s.get('encoder_fallback_rows')})"
        )


def report_scaling(all_res: list) -> None:
    by = {}
    for ds, res in all_res:
        by.setdefault(ds["dataset"], []).append((ds, res))
    for name, runs in by.items():
        runs.sort(key=lambda x: x[0]["scale"])
        if len(runs) < 2:
            continue
        (d0, r0), (d1, r1) = runs[0], runs[-1]
        k = d1["scale"] / d0["scale"]
        print(f"\n== scaling {name}: {d1['scale']}x vs {d0['scale']}x (data x{k:g})")
        for meth in METHODS:
            a, b = r0.get(meth), r1.get(meth)
            if not a or not b or "error" in a or "error" in b:
                continue
            print(
                f"{name} {LABELS[meth]} {d1['scale']}x/{d0['scale']}x: tokens {b['tokens'] / a['tokens']:.2f}x, time {b['seconds'] / a['seconds']:.2f}x "
                f"({a['seconds']:.1f}s -> {b['seconds']:.1f}s), throughput {_m(a['tokens'] / a['seconds'])} -> {_m(b['tokens'] / b['seconds'])} tok/s, "
                f"CPU {b['cpu_s'] / a['cpu_s']:.2f}x, RSS max {b['rss_max_mb'] / a['rss_max_mb']:.2f}x ({a['rss_max_mb']:.0f} -> {b['rss_max_mb']:.0f}MB), "
                f"PSS sum {b['pss_sum_mb'] / a['pss_sum_mb']:.2f}x ({a['pss_sum_mb']:.0f} -> {b['pss_sum_mb']:.0f}MB)"
            )


def machine() -> str:
    cpu, mem = "?", 0.0
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?"
            )
        with open("/proc/meminfo") as f:
            mem = next((int(ln.split()[1]) / 2**20 for ln in f if ln.startswith("MemTotal")), 0.0)
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [f"python {platform.python_version()}"]
    for mod in ("sftprep", "tokenizers", "datasets", "transformers", "torch", "trl"):
        try:
            out.append(f"{mod} {version(mod)}")
        except PackageNotFoundError:
            out.append(f"{mod} (not installed)")
    return ", ".join(out)


def main(argv=None) -> int:  # noqa: C901, PLR0915 - argument handling and the run order, read top to bottom
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1:])
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    ap.add_argument(
        "--scale",
        default="1",
        help="data multiplier, or a comma list (e.g. 1,10) to print scaling ratios",
    )
    ap.add_argument(
        "--num-proc",
        type=int,
        default=2,
        help="processes for TRL (dataset_num_proc) and the ceiling's renderers",
    )
    ap.add_argument(
        "--sftprep-num-proc",
        type=int,
        default=None,
        help="sftprep --num-proc (default: --num-proc; 0 = sftprep's own choice)",
    )
    ap.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER))
    ap.add_argument("--only", default=",".join(METHODS), help="comma list of " + ",".join(METHODS))
    ap.add_argument("--datasets", default="alpaca,synthetic", help="comma list of alpaca,synthetic")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small smoke run (alpaca x1, 500 synthetic conversations)",
    )
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument(
        "--alpaca-repeat",
        type=int,
        default=None,
        help="alpaca repeats at 1x (default 20; 1 with --quick)",
    )
    ap.add_argument(
        "--synthetic-rows",
        type=int,
        default=None,
        help="synthetic conversations at 1x (default 7000; 500 with --quick)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each method R times and keep the fastest (the machine may be shared)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1800, help="per method run, seconds")
    ap.add_argument(
        "--workdir", help="where data and outputs go (default: a temp dir, removed at the end)"
    )
    ap.add_argument("--json", help="write all results to this file")
    a = ap.parse_args(argv)
    a.only = [m.strip().lower() for m in a.only.split(",") if m.strip()]
    bad = [m for m in a.only if m not in METHODS]
    if bad:
        ap.error(f"--only: unknown {bad}; use {','.join(METHODS)}")
    a.datasets = [d.strip() for d in a.datasets.split(",") if d.strip()]
    a.alpaca_repeat = a.alpaca_repeat or (1 if a.quick else 20)
    a.sftprep_num_proc = a.num_proc if a.sftprep_num_proc is None else a.sftprep_num_proc
    a.synthetic_rows = a.synthetic_rows or (500 if a.quick else 7000)
    a.tokenizer = str(Path(a.tokenizer).resolve())
    scales = [int(s) for s in str(a.scale).split(",")]
    if "alpaca" in a.datasets and not ALPACA_SRC.exists():
        print(f"[skip] alpaca: {ALPACA_SRC} not found (set SFT_SHARED_ASSETS)")
        a.datasets.remove("alpaca")

    work = Path(a.workdir or tempfile.mkdtemp(prefix="sftprep-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"[bench] {versions()}; {machine()}; {platform.platform()}; load avg {os.getloadavg()[0]:.1f}"
    )
    print(
        f"[bench] methods {','.join(a.only)}; datasets {','.join(a.datasets)}; scales {scales}; --num-proc {a.num_proc} (sftprep {a.sftprep_num_proc}); --repeat {a.repeat}; work dir {work}",
        flush=True,
    )
    all_res = []
    t_start = time.perf_counter()
    try:
        for scale in scales:
            for ds in make_datasets(a, scale, work):
                res, runs = {}, {meth: [] for meth in METHODS if meth in a.only}
                for _ in range(
                    a.repeat
                ):  # rounds of one run per method: a busy spell hits all methods alike
                    for meth in runs:
                        if meth in res:
                            continue  # failed before
                        try:
                            runs[meth].append(
                                run_sftprep(ds, a, work, "hf" if meth == "sftprep_hf" else "auto")
                                if meth.startswith("sftprep")
                                else run_worker(meth, ds, a, work)
                            )
                        except Exception as err:  # noqa: BLE001 -- report it and go on with the other methods
                            res[meth] = {"error": str(err)}
                            print(f"[{meth}] {ds['name']}: FAILED\n{err}", flush=True)
                for meth, done in runs.items():
                    if meth not in res:
                        res[meth] = min(done, key=lambda r: r["seconds"])  # best of --repeat
                        res[meth]["all_seconds"] = [round(r["seconds"], 2) for r in done]
                        res[meth]["all_cpu_s"] = [
                            round(r.get("cpu_s", r["process_cpu_s"]), 2) for r in done
                        ]
                report(ds, res, a)
                all_res.append((ds, res))
            shutil.rmtree(work / f"data-x{scale}", ignore_errors=True)
        report_scaling(all_res)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n[bench] total wall {time.perf_counter() - t_start:.0f}s")
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                [
                    {"dataset": {k: str(v) for k, v in ds.items()}, "results": res}
                    for ds, res in all_res
                ],
                indent=1,
                default=str,
            )
        )
    failed = any("error" in r for _, res in all_res for r in res.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
