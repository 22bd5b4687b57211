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
