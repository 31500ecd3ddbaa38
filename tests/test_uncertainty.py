import numpy as np
import pytest

from selectkd.uncertainty import entropy, kl_divergence, least_confidence, margin, normalized_entropy, softmax


def test_entropy_hand_computed():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.7, 0.2, 0.1]])
    expected = [np.log(2), 0.0, -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))]
    assert entropy(p) == pytest.approx(expected, abs=1e-9)
    assert normalized_entropy(np.full((1, 4), 0.25)) == pytest.approx([1.0])


def test_margin_and_least_confidence_hand_computed():
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    assert margin(p) == pytest.approx([0.5, 0.05])
    assert least_confidence(p) == pytest.approx([0.3, 0.6])


def test_criteria_disagree_on_crafted_rows():
    # A: top two nearly tied but the third class is empty -> low entropy, tiny margin.
    # B: a clear top class with the rest spread evenly -> higher entropy, large margin.
    a = [0.45, 0.44, 0.11, 0.0]
    b = [0.4, 0.2, 0.2, 0.2]
    p = np.array([a, b])
    assert np.argmax(entropy(p)) == 1  # entropy calls B the more uncertain
    assert np.argmin(margin(p)) == 0  # margin calls A the more uncertain
    # least confidence: A (max 0.45) is less uncertain than B (max 0.4)
    assert np.argmax(least_confidence(p)) == 1
    c = [0.5, 0.5, 0.0, 0.0]
    d = [0.55, 0.15, 0.15, 0.15]
    q = np.array([c, d])
    assert np.argmax(least_confidence(q)) == 0 and np.argmax(entropy(q)) == 1


def test_kl_hand_computed_and_softmax():
    p = np.array([[0.5, 0.5]])
    q = np.array([[0.9, 0.1]])
    assert kl_divergence(p, q) == pytest.approx([0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)])
    assert kl_divergence(p, p) == pytest.approx([0.0], abs=1e-9)
    assert softmax(np.array([[0.0, np.log(3.0)]])) == pytest.approx(np.array([[0.25, 0.75]]))
