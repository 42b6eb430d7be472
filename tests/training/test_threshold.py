"""best_threshold: the sorted sweep picks exactly what trying every candidate picks."""

import random

import pytest

from smokerdet.metrics import best_threshold, binary_metrics


def brute_force_threshold(y_true: list[int], y_prob: list[float]) -> float:
    """Every candidate scored with the full metrics: O(n^2 log n), the definition."""
    values = sorted(set(y_prob))
    if not values:
        return 0.5
    candidates = [0.5] + [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)]
    return max(candidates, key=lambda t: (binary_metrics(y_true, y_prob, t).f1, -abs(t - 0.5)))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [1, 2, 6])  # 1 and 2 decimals: many tied scores
def test_sweep_equals_brute_force_on_300_scores(seed, decimals):
    rng = random.Random(seed)
    labels = [rng.randint(0, 1) for _ in range(300)]
    # Scores that lean towards the label, so the best threshold is not trivially 0 or 1.
    probs = [round(min(1.0, max(0.0, rng.gauss(0.35 + 0.3 * y, 0.2))), decimals) for y in labels]
    assert best_threshold(labels, probs) == brute_force_threshold(labels, probs)


@pytest.mark.parametrize(
    "labels, probs",
    [
        ([], []),
        ([1, 1, 0], [0.7, 0.7, 0.7]),  # one distinct value: only 0.5 is a candidate
        ([0, 0, 0], [0.1, 0.2, 0.9]),  # no positives: every F1 is 0, so 0.5
        ([1, 1, 1], [0.1, 0.2, 0.9]),  # no negatives
        ([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6]),
    ],
)
def test_edge_cases_equal_brute_force(labels, probs):
    assert best_threshold(labels, probs) == brute_force_threshold(labels, probs)


def test_runs_on_20000_scores_and_beats_every_other_candidate():
    rng = random.Random(7)
    labels = [rng.randint(0, 1) for _ in range(20_000)]
    probs = [min(1.0, max(0.0, rng.gauss(0.4 + 0.2 * y, 0.15))) for y in labels]
    t = best_threshold(labels, probs)
    best_f1 = binary_metrics(labels, probs, t).f1
    for other in [0.5, *rng.sample(sorted(set(probs)), 40)]:
        assert binary_metrics(labels, probs, other).f1 <= best_f1


def test_lengths_must_match():
    with pytest.raises(ValueError, match="differ in length"):
        best_threshold([1, 0], [0.5])
