"""Disentanglement metrics on known-answer toy encoders (numpy only, no TF)."""

import numpy as np
import pytest

from vae import metrics

SIZES = (4, 5, 3, 6)
TOY = metrics.GroundTruth(SIZES, lambda f: np.asarray(f, np.float64))
FAST = dict(num_train=60, num_eval=40, num_variance_estimate=800, batch_size=32)


def _noisy_identity(x):
    return x / np.array(SIZES) + 0.01 * np.random.default_rng(len(x)).standard_normal(x.shape)


_Q = np.linalg.qr(np.random.default_rng(7).standard_normal((4, 4)))[0]


def _rotated(x):
    return (x / np.array(SIZES) - 0.5) @ _Q


def _ignores_factor(x):
    out = _noisy_identity(x)
    out[:, 2] = 0.0  # factor 2 not encoded at all
    return out


def _score_all(represent, seed=0):
    rng = np.random.default_rng
    return {
        "mig": metrics.mig(TOY, represent, rng(seed), num_train=3000)["discrete_mig"],
        "fv": metrics.factor_vae_score(TOY, represent, rng(seed), **FAST)["eval_accuracy"],
        "dci": metrics.dci(TOY, represent, rng(seed), num_train=3000)["dci_disentanglement"],
    }


def test_true_factors_score_near_the_top():
    s = _score_all(_noisy_identity)
    assert s["mig"] > 0.9 and s["fv"] > 0.95 and s["dci"] > 0.9


def test_random_rotation_scores_low():
    s = _score_all(_rotated)
    good = _score_all(_noisy_identity)
    assert s["mig"] < 0.3 and s["dci"] < 0.5
    # The FactorVAE score is only partly rotation-sensitive (Kim & Mnih's own caveat): lower, not low.
    assert s["fv"] < good["fv"] - 0.1


def test_ignoring_a_factor_is_penalised():
    s = _score_all(_ignores_factor)
    assert 0.6 < s["mig"] < 0.85  # one factor of four has a zero gap
    assert s["fv"] < 0.85
    per_factor = metrics.mig(TOY, _ignores_factor, np.random.default_rng(0), num_train=3000)["mig_per_factor"]
    assert per_factor[2] < 0.05 < min(per_factor[:2] + per_factor[3:])


def test_results_are_deterministic_per_seed():
    assert _score_all(_rotated, 3) == _score_all(_rotated, 3)


def test_mutual_info_and_entropy_match_closed_form():
    a = np.array([0, 0, 1, 1] * 25)
    assert metrics.entropy(a) == pytest.approx(np.log(2))
    assert metrics.mutual_info(a, a) == pytest.approx(np.log(2))
    assert metrics.mutual_info(a, np.array([0, 1] * 50)) == pytest.approx(0.0, abs=1e-12)


def test_dci_of_diagonal_and_uniform_importance():
    assert metrics.dci_disentanglement_from_importance(np.eye(3)) == pytest.approx(1.0)
    assert metrics.dci_disentanglement_from_importance(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-12)


def test_collapsed_code_gives_zero_factor_vae_score():
    out = metrics.factor_vae_score(TOY, lambda x: np.zeros((len(x), 2)), np.random.default_rng(0), **FAST)
    assert out["eval_accuracy"] == 0.0 and out["num_active_dims"] == 0


def test_factor_vae_per_factor_accuracy_names_the_factor_no_dimension_carries():
    out = metrics.factor_vae_score(TOY, _ignores_factor, np.random.default_rng(0), **FAST)
    per_factor = out["eval_accuracy_per_factor"]
    # Fixing factor 2 leaves no dimension still: its votes land on others' dimensions.
    assert per_factor[2] == 0.0 and min(per_factor[:2] + per_factor[3:]) == 1.0
    assert out["eval_accuracy"] < 0.85


def test_per_factor_accuracy_of_hand_counted_votes():
    votes = np.array([[6, 1, 0], [2, 3, 0], [0, 0, 0]])  # (dims, factors); factor 2 had no votes
    accuracy = metrics._per_factor_accuracy(votes, np.array([0, 1, 0]))
    assert accuracy[:2] == [0.75, 0.75] and np.isnan(accuracy[2])


def test_mig_of_a_hand_computed_case():
    # z0 = a carries I = ln 2 about a; z1 = a + b carries ½ ln 2 about each: both gaps are ½.
    factors = np.array([(a, b) for a in (0, 1) for b in (0, 1)] * 25)
    codes = np.stack([factors[:, 0], factors[:, 0] + factors[:, 1]], axis=1).astype(np.float64)
    out = metrics.mig_from_codes(codes, factors)
    assert out["mig_per_factor"] == pytest.approx([0.5, 0.5])
    assert out["discrete_mig"] == pytest.approx(0.5)


def test_dci_completeness_of_a_hand_computed_case():
    # Factor 0 spread over codes 0 and 1 (H = ln 2 / ln 3), factor 1 in code 2 alone.
    importance = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert metrics.dci_disentanglement_from_importance(importance) == pytest.approx(1.0)
    expected = 2 / 3 * (1 - np.log(2) / np.log(3)) + 1 / 3
    assert metrics.dci_completeness_from_importance(importance) == pytest.approx(expected)


def test_dci_importance_gives_each_factor_equal_weight():
    # As tree feature importances: every factor's column sums to 1, whatever its scale.
    importance = metrics.importance_matrix(np.array([[9.0, 0.05], [0.5, 0.02], [0.5, 0.03]]))
    assert importance.sum(0) == pytest.approx([1.0, 1.0])
    assert metrics.dci_disentanglement_from_importance(importance) == pytest.approx(0.1475, abs=1e-3)


def test_dci_informativeness_is_high_for_true_factors_and_low_for_noise():
    rng = np.random.default_rng
    good = metrics.dci(TOY, _noisy_identity, rng(0), num_train=2000, num_test=1000, method="ridge")
    stream = rng(5)  # fresh noise for every batch: the test codes are not the training codes

    def noise(x):
        return stream.standard_normal((len(x), 4))

    pure_noise = metrics.dci(TOY, noise, rng(0), num_train=2000, num_test=1000, method="ridge")
    assert good["dci_informativeness_test"] > 0.99
    assert good["dci_completeness"] > 0.9
    # Ridge on 4 noise codes fits a little of the training set and none of the test set.
    assert pure_noise["dci_informativeness_train"] > pure_noise["dci_informativeness_test"]
    assert pure_noise["dci_informativeness_test"] < 0.01


def test_factor_vae_prunes_on_standard_deviation_not_variance():
    # Codes with std ≈ 0.14 (variance ≈ 0.02): active in disentanglement_lib (std ≥ 0.05).
    out = metrics.factor_vae_score(TOY, lambda x: 0.5 * x / np.array(SIZES), np.random.default_rng(0), **FAST)
    assert out["num_active_dims"] == 4
    assert out["eval_accuracy"] > 0.9
