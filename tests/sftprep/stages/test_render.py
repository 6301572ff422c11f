"""The turn locator and its suffix matcher, tested directly: hand cases and a brute-force reference."""

import random

from sftprep.stages.render import _longest_suffix_continuing, _subtract


def brute_force(turn: str, full: str, start: int) -> int:
    window = full[start : start + len(turn)]
    return max(
        (k for k in range(len(window) + 1) if turn[len(turn) - k :] == window[:k]), default=0
    )


def test_the_suffix_matcher_on_hand_cases():
    assert _longest_suffix_continuing("answer<end>", "xxanswer<end>\n", 2) == 11  # the whole turn
    assert _longest_suffix_continuing("<think></think>answer<end>", "answer<end>\nmore", 0) == 11
    assert (
        _longest_suffix_continuing("abc", "zzz", 0) == 0
        and _longest_suffix_continuing("abc", "", 0) == 0
    )


def test_the_suffix_matcher_agrees_with_brute_force():
    rng = random.Random(0)
    for _ in range(3000):
        turn = "".join(rng.choice("ab") for _ in range(rng.randint(0, 8)))
        full = "".join(rng.choice("ab") for _ in range(rng.randint(0, 12)))
        start = rng.randint(0, len(full))
        assert _longest_suffix_continuing(turn, full, start) == brute_force(turn, full, start), (
            turn,
            full,
            start,
        )


def test_subtract_removes_holes_from_spans():
    assert _subtract([(0, 10)], [(2, 4), (6, 7)]) == [(0, 2), (4, 6), (7, 10)]
    assert _subtract([(0, 5), (8, 9)], [(0, 9)]) == []
    assert _subtract([(3, 6)], [(0, 3), (6, 8)]) == [(3, 6)]


def _reference_suffix_within(pattern: str, text: str, after: int) -> int:
    """Brute force: the longest suffix of `pattern` that occurs in text[after:]."""
    return max(k for k in range(len(pattern) + 1) if pattern[len(pattern) - k :] in text[after:])


def _reference_suffix_continuing(turn: str, full: str, start: int) -> int:
    """Brute force: the longest suffix of `turn` that full[start:] begins with."""
    return max(k for k in range(len(turn) + 1) if full.startswith(turn[len(turn) - k :], start))


def test_suffix_alignment_equals_brute_force_on_random_and_repetitive_strings():
    """The str.find / binary-search versions (and their KMP fallback past 64 candidates) give the
    brute-force answers, on small alphabets where borders are many and on one-letter runs."""
    import random

    from sftprep.stages.render import _longest_suffix_continuing, _longest_suffix_within

    rng = random.Random(0)
    fallbacks = 0
    for trial in range(20000):
        alphabet, size = ("a", 150) if trial % 7 == 0 else ("ab<|>\n" if trial % 2 else "ab", 14)
        turn = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, size)))
        full = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 2 * size)))
        at = rng.randint(0, len(full))
        assert _longest_suffix_within(turn, full, at) == _reference_suffix_within(turn, full, at)
        expected = _reference_suffix_continuing(turn, full, at)
        assert _longest_suffix_continuing(turn, full, at) == expected, (turn, full, at)
        fallbacks += alphabet == "a" and len(turn) > 64 and expected < len(turn) - 64
    assert fallbacks > 10, "guard: the KMP fallback ran"
