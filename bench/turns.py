#!/usr/bin/env python
"""Cost per message of long conversations: the same messages as 16-turn ... 512-turn chats.

    python bench/turns.py                 # 4,096 messages, SmolLM2's ChatML template, 1 process
    python bench/turns.py --messages 8192 --turns 16,128,512 --tokenizer ../shared/assets/tokenizers/qwen3
    python bench/turns.py --tokenizer ../shared/assets/tokenizers/qwen3 --renderer jinja2   # no minijinja
    python bench/turns.py --tokenizer ../shared/assets/tokenizers/llama3_1 --system   # a system prompt first

Each conversation alternates user and assistant messages (real Alpaca text, cut to a few
sentences) and every assistant turn trains, so sftprep locates every turn. One `sftprep.build()`
per length, in this process (`--num-proc 1`, `--max-length` large enough that nothing is cut),
best of `--repeat`; it prints seconds per 1,000 messages and the ratio to the shortest chats. The
issue's target (#17) is a ratio of at most 1.5 at 512 turns.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ASSETS = ROOT.parent / "shared" / "assets"


def conversations(messages: int, turns: int, system: bool = False) -> list[dict]:
    rows = json.loads((ASSETS / "data" / "alpaca_en_demo.json").read_text())
    texts = [(r["instruction"] + " " + r["output"])[:240] for r in rows]
    chats, k = [], 0
    for _ in range(messages // turns):
        chat = [{"role": "system", "content": "You are a helpful assistant."}] if system else []
        for t in range(turns):
            chat.append(
                {"role": "user" if t % 2 == 0 else "assistant", "content": texts[k % len(texts)]}
            )
            k += 1
        chats.append({"messages": chat})
    return chats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=4096)
    ap.add_argument("--turns", default="16,64,256,512")
    ap.add_argument("--tokenizer", default=str(ROOT / "examples" / "smollm2-tokenizer"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--system", action="store_true", help="start every chat with a system prompt")
    ap.add_argument(
        "--renderer", default="auto", help="config `renderer` (jinja2: Jinja2 alone, for an A/B)"
    )
    a = ap.parse_args()
    import sftprep

    work = Path(tempfile.mkdtemp(prefix="turns-"))
    results = {}
    try:
        for turns in [int(t) for t in a.turns.split(",")]:
            source = work / f"chats-{turns}.jsonl"
            chats = conversations(a.messages, turns, a.system)
            source.write_text("".join(json.dumps(c) + "\n" for c in chats))
            best = float("inf")
            for _ in range(a.repeat):
                out = work / f"out-{turns}"
                shutil.rmtree(out, ignore_errors=True)
                started = time.perf_counter()
                sftprep.build(
                    {"sources": [str(source)], "tokenizer": a.tokenizer, "out": str(out),
                     "max_length": 65536, "num_proc": 1, "packing": "none",
                     "renderer": a.renderer}
                )  # fmt: skip
                best = min(best, time.perf_counter() - started)
            results[turns] = best / (len(chats) * turns) * 1000
            base = results[min(results)]
            print(
                f"{turns:>4} turns x {len(chats):>4} chats: {best:6.2f} s, "
                f"{results[turns]:.3f} s per 1,000 messages, x{results[turns] / base:.2f} the shortest",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
