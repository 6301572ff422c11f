#!/usr/bin/env python
"""Deterministic synthetic multi-turn chat data (`messages` JSONL) for benchmarks.

    python bench/make_synthetic.py --rows 7000 --seed 0 --out /tmp/synthetic.jsonl

Each row is `{"messages": [{"role": ..., "content": ...}, ...]}`: an optional system turn (30%),
then 1 to 4 user/assistant exchanges (2 to 8 turns). Message lengths are log-normal (users short,
assistants longer, a few very long ones), so some conversations exceed 2048 tokens and get
truncated, as in real data. Text is English-like: Zipf-weighted common words and pseudo-words,
sentences, paragraphs, numbered lists, numbers and now and then a fenced code block.

The output depends only on (rows, seed), and the first N rows of a larger set equal the N rows of
a smaller one with the same seed, so `--rows 70000` is the 7000-row set followed by more of the same.
"""

import argparse
import json
import sys

import numpy as np

COMMON = ["the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with", "as", "I", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "hot", "word", "but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "an", "each", "she", "which", "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write", "would", "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water", "than", "call", "first", "who", "may", "down", "side", "been", "now", "find", "any", "new", "work", "part", "take", "get", "place", "made", "live", "where", "after", "back", "little", "only", "round", "man", "year", "came", "show", "every", "good", "me", "give", "our", "under", "name", "very", "through", "just", "form", "sentence", "great", "think", "say", "help", "low", "line", "differ", "turn", "cause", "much", "mean", "before", "move", "right", "boy", "old", "too", "same", "tell", "does", "set", "three", "want", "air", "well", "also", "play", "small", "end", "put", "home", "read", "hand", "port", "large", "spell", "add", "even", "land", "here", "must", "big", "high", "such", "follow", "act", "why", "ask", "men", "change", "went", "light", "kind", "off", "need", "house", "picture", "try", "us", "again", "animal", "point", "mother", "world", "near", "build", "self", "earth", "father", "head", "stand", "own", "page", "should", "country", "found", "answer", "school", "grow", "study", "still", "learn", "plant", "cover", "food", "sun", "four", "between", "state", "keep", "eye", "never", "last", "let", "thought", "city", "tree", "cross", "farm", "hard", "start", "might", "story", "saw", "far", "sea", "draw", "left", "late", "run", "while", "press", "close", "night", "real", "life", "few", "north", "open", "seem", "together", "next", "white", "children", "begin", "got", "walk", "example", "ease", "paper", "group", "always", "music", "those", "both", "mark", "often", "letter", "until", "mile", "river", "car", "feet", "care", "second", "book", "carry", "took", "science", "eat", "room", "friend", "began", "idea", "fish", "mountain", "stop", "once", "base", "hear", "horse", "cut", "sure", "watch", "color", "face", "wood", "main", "enough", "plain", "girl", "usual", "young", "ready", "above", "ever", "red", "list", "though", "feel", "talk", "bird", "soon", "body", "dog", "family", "direct", "pose", "leave", "song", "measure", "door", "product", "black", "short", "numeral", "class", "wind", "question", "happen", "complete", "ship", "area", "half", "rock", "order", "fire", "south", "problem", "piece", "told", "knew", "pass", "since", "top", "whole", "king", "space", "heard", "best", "hour", "better", "true", "during", "hundred", "five", "remember", "step", "early", "hold", "west", "ground", "interest", "reach", "fast", "verb", "sing", "listen", "six", "table", "travel", "less", "morning", "ten", "simple", "several", "vowel", "toward", "war", "lay", "against", "pattern", "slow", "center", "love", "person", "money", "serve", "appear", "road", "map", "rain", "rule", "govern", "pull", "cold", "notice", "voice", "unit", "power", "town", "fine", "certain", "fly", "fall", "lead", "cry", "dark", "machine", "note", "wait", "plan", "figure", "star", "box", "noun", "field", "rest", "correct", "able", "pound", "done", "beauty", "drive", "stood", "contain", "front", "teach", "week", "final", "gave", "green", "oh", "quick", "develop", "ocean", "warm", "free", "minute", "strong", "special", "mind", "behind", "clear", "tail", "produce", "fact", "street", "inch", "multiply", "nothing", "course", "stay", "wheel", "full", "force", "blue", "object", "decide", "surface", "deep", "moon", "island", "foot", "system", "busy", "test", "record", "boat", "common", "gold", "possible", "plane", "stead", "dry", "wonder", "laugh", "thousand", "ago", "ran", "check", "game", "shape", "equate", "miss", "brought", "heat", "snow", "tire", "bring", "yes", "distant", "fill", "east", "paint", "language", "among", "model", "data", "function", "value", "return", "result", "input", "output", "training", "loss", "token", "gradient", "batch", "learning", "rate", "dataset", "algorithm", "network", "layer", "memory", "process", "python", "code", "file", "error"]

SYLLABLES = ["ba", "be", "bi", "bo", "bu", "ca", "ce", "ci", "co", "cu", "da", "de", "di", "do", "du", "fa", "fe", "fi", "fo", "ga", "ge", "gi", "go", "la", "le", "li", "lo", "lu", "ma", "me", "mi", "mo", "mu", "na", "ne", "ni", "no", "nu", "pa", "pe", "pi", "po", "ra", "re", "ri", "ro", "ru", "sa", "se", "si", "so", "ta", "te", "ti", "to", "tu", "va", "ve", "vi", "vo", "za", "ze", "zi", "zo", "an", "en", "in", "on", "un", "ar", "er", "ir", "or", "ur", "al", "el", "il", "ol", "str", "tr", "pl", "gr", "th", "sh", "ch", "qu", "ex"]
SYSTEMS = [
    "You are a helpful assistant.",
    "You are a concise technical assistant. Answer precisely and cite numbers when you can.",
    "You are a friendly tutor who explains things step by step.",
    "You are an expert software engineer. Prefer short code examples.",
    "You are a careful reviewer. Point out mistakes politely.",
]
CODE_LINES = [
    "def compute(x, y):", "    return x * y + 1", "for i in range(10):", "    total += values[i]",
    "if result is None:", "    raise ValueError('missing result')", "import numpy as np", "data = np.zeros((4, 4))",
    "print(f'{name}: {value:.3f}')", "class Model:", "    def __init__(self, size):", "        self.size = size",
]


class Generator:
    """All randomness comes from one seeded numpy PCG64 stream, consumed row by row."""

    def __init__(self, seed: int, pseudo_words: int = 3000):
        self.rng = np.random.default_rng(seed)
        pseudo = []
        for _ in range(pseudo_words):
            n = int(self.rng.integers(2, 5))
            pseudo.append("".join(SYLLABLES[int(k)] for k in self.rng.integers(0, len(SYLLABLES), n)))
        self.vocab = np.array(COMMON + pseudo, dtype=object)
        ranks = np.arange(1, len(self.vocab) + 1, dtype=np.float64)
        p = 1.0 / ranks**1.05
        self.p = p / p.sum()

    def words(self, n: int) -> list:
        return list(self.vocab[self.rng.choice(len(self.vocab), size=n, p=self.p)])

    def prose(self, n_words: int) -> str:
        words = self.words(n_words)
        out, para, i = [], [], 0
        while i < len(words):
            k = int(self.rng.integers(5, 22))
            sent = words[i : i + k]
            i += k
            if self.rng.random() < 0.15:
                sent.insert(int(self.rng.integers(0, len(sent) + 1)), str(int(self.rng.integers(0, 10000))))
            text = " ".join(sent)
            text = text[0].upper() + text[1:] + (". " if self.rng.random() < 0.85 else "? ")
            if self.rng.random() < 0.2:
                text = text.replace(" ", ", ", 1)
            para.append(text.strip())
            if self.rng.random() < 0.25:
                out.append(" ".join(para))
                para = []
        if para:
            out.append(" ".join(para))
        return "\n\n".join(out)

    def answer(self, n_words: int) -> str:
        r = self.rng.random()
        if r < 0.15:  # numbered list
            items = max(2, min(9, n_words // 25))
            per = max(3, n_words // items)
            head = self.prose(max(5, per // 2))
            lines = [f"{j + 1}. {self.prose(per)}" for j in range(items)]
            return head + "\n\n" + "\n".join(lines)
        if r < 0.25:  # prose + a code block
            code = "\n".join(CODE_LINES[int(k)] for k in self.rng.integers(0, len(CODE_LINES), int(self.rng.integers(3, 15))))
            return self.prose(max(5, n_words // 2)) + "\n\n```python\n" + code + "\n```\n\n" + self.prose(max(5, n_words // 3))
        return self.prose(n_words)

    def length(self, median: float, sigma: float, lo: int, hi: int) -> int:
        return int(np.clip(self.rng.lognormal(np.log(median), sigma), lo, hi))

    def row(self) -> dict:
        messages = []
        if self.rng.random() < 0.3:
            messages.append({"role": "system", "content": SYSTEMS[int(self.rng.integers(0, len(SYSTEMS)))]})
        for _ in range(int(self.rng.integers(1, 5))):
            user_len = self.length(35, 0.9, 3, 1500)
            messages.append({"role": "user", "content": self.prose(user_len)})
            messages.append({"role": "assistant", "content": self.answer(self.length(110, 0.9, 3, 1800))})
        return {"messages": messages}


def generate(rows: int, seed: int = 0):
    """Yield `rows` conversations; deterministic in (rows, seed), prefix-stable in rows."""
    gen = Generator(seed)
    for _ in range(rows):
        yield gen.row()


def write_jsonl(path: str, rows: int, seed: int = 0) -> int:
    """Write the set to `path`; returns its size in bytes."""
    size = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in generate(rows, seed):
            line = json.dumps(row, ensure_ascii=False) + "\n"
            f.write(line)
            size += len(line.encode())
    return size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=7000, help="conversations (default 7000, about 5M tokens with SmolLM2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output .jsonl")
    a = ap.parse_args(argv)
    size = write_jsonl(a.out, a.rows, a.seed)
    print(f"wrote {a.rows} conversations, {size / 1e6:.1f} MB to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
