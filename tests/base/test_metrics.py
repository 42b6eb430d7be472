import math

import pytest

from smokerdet.metrics import best_threshold, binary_metrics, roc_auc


def test_all_correct():
    m = binary_metrics([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2])
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 0, 2, 0)
    assert m.accuracy == m.precision == m.recall == m.f1 == m.specificity == 1.0
    assert m.roc_auc == 1.0
    assert m.notes == []


def test_all_wrong():
    m = binary_metrics([1, 1, 0, 0], [0.1, 0.2, 0.9, 0.8])
    assert (m.tp, m.fp, m.tn, m.fn) == (0, 2, 0, 2)
    assert m.accuracy == 0.0 and m.precision == 0.0 and m.recall == 0.0 and m.f1 == 0.0
    assert m.roc_auc == 0.0


def test_hand_computed_mixed_case():
    # tp=2 (0.9, 0.6), fn=1 (0.3), fp=1 (0.7), tn=2 (0.2, 0.1)
    m = binary_metrics([1, 1, 1, 0, 0, 0], [0.9, 0.6, 0.3, 0.7, 0.2, 0.1])
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 1, 2, 1)
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.specificity == pytest.approx(2 / 3)
    # positives outrank negatives in 7 of 9 pairs
    assert m.roc_auc == pytest.approx(7 / 9)


def test_no_positive_predictions_reports_zero_precision_with_note():
    m = binary_metrics([1, 0, 1], [0.1, 0.2, 0.3])
    assert m.precision == 0.0 and m.f1 == 0.0
    assert not math.isnan(m.precision)
    assert any("precision reported as 0" in n for n in m.notes)


def test_single_class_present():
    m = binary_metrics([0, 0, 0], [0.1, 0.7, 0.2])
    assert m.roc_auc is None
    assert m.recall == 0.0
    assert any("ROC-AUC undefined" in n for n in m.notes)
    assert m.to_dict()["confusion_matrix"]["matrix"] == [[2, 1], [0, 0]]


def test_threshold_is_inclusive():
    assert binary_metrics([1], [0.5], threshold=0.5).tp == 1


def test_roc_auc_ties_count_half():
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5


def test_best_threshold_separates_when_possible():
    t = best_threshold([0, 0, 1, 1], [0.1, 0.3, 0.35, 0.9])
    assert 0.3 < t <= 0.35
    assert binary_metrics([0, 0, 1, 1], [0.1, 0.3, 0.35, 0.9], t).f1 == 1.0


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        binary_metrics([1, 0], [0.5])


# Asymmetric cases: precision, recall, F1 and specificity all differ, so a formula that mixes
# them up (F1 as the mean of P and R, P and R swapped) gives a different number.


def test_hand_computed_asymmetric_case():
    # positives 0.9 0.8 0.7 (tp) 0.3 0.2 (fn); negatives 0.6 (fp) 0.4 0.15 0.1 0.05 (tn)
    y = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    p = [0.9, 0.8, 0.7, 0.3, 0.2, 0.6, 0.4, 0.15, 0.1, 0.05]
    m = binary_metrics(y, p)
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 1, 4, 2)
    assert m.accuracy == pytest.approx(7 / 10)
    assert m.precision == pytest.approx(3 / 4)
    assert m.recall == pytest.approx(3 / 5)
    assert m.f1 == pytest.approx(2 / 3)  # harmonic mean; the arithmetic mean would be 0.675
    assert m.specificity == pytest.approx(4 / 5)
    # 0.9, 0.8, 0.7 outrank all 5 negatives; 0.3 and 0.2 outrank 0.15, 0.1, 0.05: 21 of 25
    assert m.roc_auc == pytest.approx(21 / 25)
    assert (m.support_smoking, m.support_not_smoking) == (5, 5)
    assert m.to_dict()["confusion_matrix"]["matrix"] == [[4, 1], [2, 3]]
    assert m.notes == []


def test_hand_computed_case_with_high_recall_low_precision():
    # everything above 0.25 is called smoking: tp 2, fp 3, tn 1, fn 0
    y = [1, 1, 0, 0, 0, 0]
    p = [0.9, 0.3, 0.8, 0.5, 0.4, 0.1]
    m = binary_metrics(y, p, threshold=0.25)
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 3, 1, 0)
    assert m.precision == pytest.approx(2 / 5)
    assert m.recall == 1.0
    assert m.f1 == pytest.approx(4 / 7)  # 2 * 0.4 * 1 / 1.4
    assert m.specificity == pytest.approx(1 / 4)
    assert m.accuracy == pytest.approx(3 / 6)
    # 0.9 outranks all 4 negatives; 0.3 outranks only 0.1: 5 of 8
    assert m.roc_auc == pytest.approx(5 / 8)


# ROC-AUC with tied scores: a tied (positive, negative) pair counts one half.


def test_roc_auc_ties_hand_computed():
    # positives 0.8 0.5 0.3; negatives 0.5 0.5 0.3 0.1 (interleaved, so order cannot help)
    y = [0, 1, 0, 1, 0, 1, 0]
    s = [0.5, 0.5, 0.3, 0.3, 0.1, 0.8, 0.5]
    # 0.8: beats 4 -> 4; 0.5: beats 0.3 and 0.1, ties two 0.5s -> 2 + 1;
    # 0.3: beats 0.1, ties one 0.3 -> 1 + 0.5. Total 8.5 of 12 pairs.
    assert roc_auc(y, s) == pytest.approx(8.5 / 12)
    assert binary_metrics(y, s).roc_auc == pytest.approx(8.5 / 12)


def test_roc_auc_all_scores_tied_is_one_half_whatever_the_order():
    assert roc_auc([1, 0, 1, 0], [0.5] * 4) == 0.5
    assert roc_auc([0, 0, 1, 1], [0.7] * 4) == 0.5
    assert roc_auc([1, 1, 0, 0, 0], [0.2] * 5) == 0.5


def test_roc_auc_does_not_depend_on_input_order():
    y = [1, 0, 1, 0, 1, 0, 0]
    s = [0.4, 0.4, 0.9, 0.1, 0.4, 0.6, 0.4]
    expected = roc_auc(y, s)
    pairs = list(zip(y, s, strict=True))
    for shift in range(1, len(pairs)):
        rotated = pairs[shift:] + pairs[:shift]
        assert roc_auc([a for a, _ in rotated], [b for _, b in rotated]) == pytest.approx(expected)
    # 0.9 beats 4; each 0.4 positive beats 0.1 and ties two 0.4s: (1 + 1) * 2; total 8 of 12
    assert expected == pytest.approx(8 / 12)


# Degenerate inputs: never NaN, never an exception, always a note saying what was defined.


def test_empty_input_is_all_zero_with_notes():
    m = binary_metrics([], [])
    assert m.n == 0 and (m.tp, m.fp, m.tn, m.fn) == (0, 0, 0, 0)
    assert m.accuracy == m.precision == m.recall == m.f1 == m.specificity == 0.0
    assert m.roc_auc is None
    assert any("no images" in n for n in m.notes)
    assert not any("ROC-AUC" in n for n in m.notes)  # nothing to say about one class of zero
    assert best_threshold([], []) == 0.5


def test_only_positives_all_found():
    m = binary_metrics([1, 1], [0.9, 0.6])
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 0, 0, 0)
    assert m.precision == m.recall == m.f1 == m.accuracy == 1.0
    assert m.specificity == 0.0 and m.roc_auc is None
    assert any("specificity reported as 0" in n for n in m.notes)
    assert any("ROC-AUC undefined" in n for n in m.notes)


def test_every_image_predicted_smoking_at_threshold_zero():
    m = binary_metrics([1, 0, 0], [0.0, 0.0, 0.3], threshold=0.0)
    assert (m.tp, m.fp, m.tn, m.fn) == (1, 2, 0, 0)
    assert m.precision == pytest.approx(1 / 3) and m.recall == 1.0
    assert m.f1 == pytest.approx(0.5)
    assert m.specificity == 0.0 and m.notes == []


def test_nothing_predicted_smoking_at_threshold_one():
    m = binary_metrics([1, 0], [0.99, 0.2], threshold=1.0)
    assert (m.tp, m.fp, m.tn, m.fn) == (0, 0, 1, 1)
    assert m.precision == m.recall == m.f1 == 0.0
    assert m.roc_auc == 1.0  # ranking is perfect even though the threshold labels nothing
    assert any("precision reported as 0" in n for n in m.notes)


def test_best_threshold_maximises_f1_on_an_asymmetric_case():
    y = [1, 1, 1, 0, 0, 1, 0]
    p = [0.95, 0.8, 0.55, 0.5, 0.45, 0.3, 0.1]
    t = best_threshold(y, p)
    f1 = binary_metrics(y, p, t).f1
    # midpoints between the distinct scores, plus 0.5: none does better
    values = sorted(set(p))
    for c in [0.5] + [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)]:
        assert binary_metrics(y, p, c).f1 <= f1 + 1e-12
    # cutting between 0.55 and 0.5 finds 3 of 4 smokers with no false alarm: F1 = 6 / 7,
    # better than catching all 4 with 2 false alarms at 0.2 (F1 = 0.8)
    assert t == pytest.approx(0.525) and f1 == pytest.approx(6 / 7)


# Docstring examples are part of the documentation: they must run and be right.


def _modules_with_examples() -> list[str]:
    import doctest
    import importlib
    import pkgutil

    import smokerdet

    names = []
    for info in pkgutil.walk_packages(smokerdet.__path__, "smokerdet."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        if any(t.examples for t in doctest.DocTestFinder().find(module)):
            names.append(info.name)
    return ["smokerdet", *names]


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples_run(name, monkeypatch):
    import doctest
    import importlib
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # examples/ paths are relative
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


def test_docstring_examples_that_run_include_metrics_data_and_paths():
    """Guard against the doctest test silently running nothing (every example SKIPped)."""
    import doctest
    import importlib

    runs = {}
    for name in ("smokerdet.metrics", "smokerdet.data.layout", "smokerdet.paths"):
        runs[name] = doctest.testmod(importlib.import_module(name), report=False).attempted
    assert all(n > 0 for n in runs.values()), runs
