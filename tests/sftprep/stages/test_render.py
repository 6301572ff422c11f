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
