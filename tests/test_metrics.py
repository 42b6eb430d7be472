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
