"""Disentanglement metrics against known generating factors: MIG, FactorVAE score, DCI.

Each metric is a pure function of (representation function, ground-truth data,
random state) → dict of scores, following google-research/disentanglement_lib's
definitions (evaluation/metrics/mig.py, factor_vae.py, dci.py, utils.py):

- MIG (Chen et al. 2018): latent means discretised into 20 equal-width bins per
  dimension; mutual information with each factor; per factor, the gap between the
  two most informative dimensions divided by the factor's entropy; averaged.
- FactorVAE score (Kim & Mnih 2018): latents normalised by their global standard
  deviation, dimensions whose global standard deviation is < 0.05 pruned as collapsed
  (the library's `_prune_dims`, which thresholds the square root of the variance);
  for a batch with one factor fixed, the vote goes to (argmin normalised
  variance, fixed factor); the score is the majority-vote classifier's accuracy on
  fresh evaluation votes.
- DCI disentanglement (Eastwood & Williams 2018): an importance matrix R[code, factor]
  from per-factor predictors fitted on 10 000 training codes, each factor's column
  normalised to sum to 1 (as tree feature importances do); per code, 1 − entropy
  (base K factors) of its normalised importance row, weighted by the code's share of
  the total importance; completeness the same with codes and factors swapped.
  DIFFERENCE from disentanglement_lib: it uses sklearn's GradientBoostingClassifier
  feature importances and reports its train/test accuracy as "informativeness"; there
  is no sklearn here, so the importance of code j for factor k is |w_jk| of a ridge
  regression (λ = 0.01) of the standardised factor level on the standardised codes, and
  informativeness is that regression's R² on 5 000 held-out codes. This treats factor
  levels as ordered and only sees linear (monotonic) dependence: a code that encodes a
  categorical factor (wall colour, sky) non-monotonically is under-rated, where boosted
  trees would credit it. Scores are therefore comparable between runs of this project,
  not to published numbers.

A ground-truth dataset is a `GroundTruth(factor_sizes, sample_factors, observations)`:
`observations(factors)` renders (N, ...) inputs for integer factors (N, F).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

Representation = Callable[[np.ndarray], np.ndarray]  # observations → (N, D) codes


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """A dataset whose generating factors are known (cf. disentanglement_lib's GroundTruthData)."""

    factor_sizes: tuple[int, ...]
    observations: Callable[[np.ndarray], np.ndarray]  # (N, F) int factors → (N, ...) inputs

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, np.asarray(self.factor_sizes), size=(int(n), len(self.factor_sizes)))


def synthetic_ground_truth(image_size: int) -> GroundTruth:
    """The synthetic façades (data/facades.py) at `image_size`, images as floats in [0, 1]."""
    from data import facades

    def observations(factors):
        return facades.render_facades(factors, image_size).astype(np.float32) / 255.0

    return GroundTruth(tuple(facades.FACTOR_SIZES), observations)


def generate_batch(ground_truth: GroundTruth, represent: Representation, n: int,
                   rng: np.random.Generator, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(codes (N, D), factors (N, F)) for `n` random factor draws (utils.generate_batch_factor_code)."""
    factors = ground_truth.sample_factors(n, rng)
    codes = [np.asarray(represent(ground_truth.observations(factors[i:i + batch_size])), np.float64)
             for i in range(0, n, batch_size)]
    return np.concatenate(codes), factors


# --------------------------------------------------------------------------- MIG

def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each column into `num_bins` equal-width bins over its own range (utils._histogram_discretize)."""
    out = np.zeros(codes.shape, np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information (nats) of two integer label vectors (as sklearn's mutual_info_score)."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / outer[nz])))


def entropy(labels: np.ndarray) -> float:
    """Entropy (nats) of an integer label vector."""
    p = np.unique(labels, return_counts=True)[1] / len(labels)
    return float(-np.sum(p * np.log(p)))


def mig(ground_truth: GroundTruth, represent: Representation, rng: np.random.Generator,
        num_train: int = 10_000, num_bins: int = 20, batch_size: int = 64) -> dict:
    """Mutual Information Gap (Chen et al. 2018), as disentanglement_lib's compute_mig."""
    codes, factors = generate_batch(ground_truth, represent, num_train, rng, batch_size)
    return mig_from_codes(codes, factors, num_bins)


def mig_from_codes(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> dict:
    """MIG of given codes (N, D) and factors (N, F)."""
    binned = histogram_discretize(codes, num_bins)
    m = np.array([[mutual_info(binned[:, j], factors[:, k]) for k in range(factors.shape[1])]
                  for j in range(codes.shape[1])])  # (D, F)
    h = np.array([entropy(factors[:, k]) for k in range(factors.shape[1])])
    top = np.sort(m, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros_like(top[0])
    gaps = (top[0] - second) / h
    return {"discrete_mig": float(np.mean(gaps)), "mig_per_factor": gaps.tolist()}


# --------------------------------------------------------------------------- FactorVAE

def factor_vae_score(ground_truth: GroundTruth, represent: Representation, rng: np.random.Generator,
                     batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                     num_variance_estimate: int = 10_000, prune_threshold: float = 0.05) -> dict:
    """FactorVAE score (Kim & Mnih 2018), as disentanglement_lib's compute_factor_vae.

    `num_train`/`num_eval` are numbers of votes (one per batch of `batch_size` codes).
    `eval_accuracy_per_factor[k]`: the share of factor k's evaluation votes the majority-vote
    classifier gets right (NaN without any), which says which factors cap the score: one no
    dimension carries, or one whose dimension another factor's votes claim.
    """
    codes, _ = generate_batch(ground_truth, represent, num_variance_estimate, rng)
    global_var = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold  # the library prunes on the standard deviation
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0,
                "eval_accuracy_per_factor": [0.0] * len(ground_truth.factor_sizes)}
    train_votes = _votes(ground_truth, represent, batch_size, num_train, rng, global_var, active)
    eval_votes = _votes(ground_truth, represent, batch_size, num_eval, rng, global_var, active)
    classifier = np.argmax(train_votes, axis=1)  # majority vote: code dim → factor
    other = np.arange(train_votes.shape[0])
    return {
        "train_accuracy": float(np.sum(train_votes[other, classifier]) / np.sum(train_votes)),
        "eval_accuracy": float(np.sum(eval_votes[other, classifier]) / np.sum(eval_votes)),
        "num_active_dims": int(active.sum()),
        "eval_accuracy_per_factor": _per_factor_accuracy(eval_votes, classifier),
    }


def _per_factor_accuracy(votes: np.ndarray, classifier: np.ndarray) -> list[float]:
    """votes (D, F), classifier (D,) dim → factor: per factor, its correctly classified share."""
    right = np.array([votes[classifier == k, k].sum() for k in range(votes.shape[1])], np.float64)
    total = votes.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return [float(a) for a in right / total]


def _votes(ground_truth, represent, batch_size, num_points, rng, global_var, active) -> np.ndarray:
    sizes = ground_truth.factor_sizes
    votes = np.zeros((len(global_var), len(sizes)), np.int64)  # (D, F)
    for _ in range(num_points):
        k = int(rng.integers(len(sizes)))
        factors = ground_truth.sample_factors(batch_size, rng)
        factors[:, k] = factors[0, k]  # one factor fixed across the batch
        codes = np.asarray(represent(ground_truth.observations(factors)), np.float64)
        variances = np.var(codes[:, active] / np.sqrt(global_var[active]), axis=0, ddof=1)
        argmin = int(np.argmin(variances))
        votes[np.flatnonzero(active)[argmin], k] += 1
    return votes


# --------------------------------------------------------------------------- DCI

def _standardise(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return (values - reference.mean(0)) / np.maximum(reference.std(0), 1e-8)


def ridge_fit(codes: np.ndarray, factors: np.ndarray, l2: float = 1e-2) -> np.ndarray:
    """Ridge weights (D, F) of each standardised factor level on the standardised codes."""
    x = _standardise(codes, codes)
    y = _standardise(np.asarray(factors, np.float64), np.asarray(factors, np.float64))
    gram = x.T @ x / len(x) + l2 * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ y / len(x))


def importance_matrix(weights: np.ndarray) -> np.ndarray:
    """(D, F) |weights| with each factor's column summing to 1 (a factor no code predicts: 0)."""
    importance = np.abs(weights)
    total = importance.sum(0, keepdims=True)
    return np.divide(importance, total, out=np.zeros_like(importance), where=total > 0)


def r_squared(weights: np.ndarray, codes: np.ndarray, factors: np.ndarray,
              train_codes: np.ndarray, train_factors: np.ndarray) -> np.ndarray:
    """Per-factor R² (F,) on (codes, factors) of a ridge fit standardised on the training set."""
    x = _standardise(codes, train_codes)
    train_factors = np.asarray(train_factors, np.float64)
    y = _standardise(np.asarray(factors, np.float64), train_factors)
    residual = np.sum((y - x @ weights) ** 2, axis=0)
    spread = np.sum((y - y.mean(0)) ** 2, axis=0)
    return 1.0 - residual / np.maximum(spread, 1e-12)


def dci_disentanglement_from_importance(importance: np.ndarray) -> float:
    """Σ_j ρ_j (1 − H_K(P_j·)) over codes j, as disentanglement_lib's dci.disentanglement."""
    total = importance.sum()
    if total <= 0:
        return 0.0
    p = importance / np.maximum(importance.sum(1, keepdims=True), 1e-12)
    logs = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0) / np.log(importance.shape[1])
    per_code = 1.0 + np.sum(p * logs, axis=1)
    return float(np.sum(per_code * importance.sum(1) / total))


def dci_completeness_from_importance(importance: np.ndarray) -> float:
    """Σ_k ρ_k (1 − H_D(P_·k)) over factors k (the transpose of disentanglement)."""
    return dci_disentanglement_from_importance(importance.T) if importance.shape[0] > 1 else 1.0


def gbt_importance(codes: np.ndarray, factors: np.ndarray, test_codes: np.ndarray,
                   test_factors: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float, float]:
    """(importance (D, F), train accuracy, test accuracy) as disentanglement_lib's _compute_importance_gbt.

    One scikit-learn GradientBoostingClassifier (default settings) per factor; the
    importance of each code is its |feature importance|; accuracies are averaged over
    factors. The library leaves the trees' random_state unset; it is `seed` here, so
    that the same codes give the same scores.
    """
    from sklearn.ensemble import GradientBoostingClassifier

    importance = np.zeros((codes.shape[1], factors.shape[1]))
    train_acc, test_acc = [], []
    for k in range(factors.shape[1]):
        model = GradientBoostingClassifier(random_state=seed)
        model.fit(codes, factors[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(codes) == factors[:, k]))
        test_acc.append(np.mean(model.predict(test_codes) == test_factors[:, k]))
    return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def dci_method(method: str = "auto") -> str:
    """'gbt' (disentanglement_lib's, needs scikit-learn) or 'ridge'; 'auto' picks gbt when installed."""
    if method == "auto":
        try:
            import sklearn  # noqa: F401
        except ImportError:
            return "ridge"
        return "gbt"
    if method not in ("gbt", "ridge"):
        raise ValueError(f"DCI method must be auto, gbt or ridge, got {method!r}")
    return method


def dci(ground_truth: GroundTruth, represent: Representation, rng: np.random.Generator,
        num_train: int = 10_000, num_test: int = 5_000, batch_size: int = 64,
        method: str = "auto") -> dict:
    """DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018).

    As disentanglement_lib's compute_dci: importances from `num_train` codes, then
    informativeness on `num_test` fresh ones. method "gbt": the library's boosted
    trees and classification accuracies; "ridge": |ridge weights| and the fit's mean
    R² (see the module docstring); "auto": gbt when scikit-learn is installed.
    """
    method = dci_method(method)
    codes, factors = generate_batch(ground_truth, represent, num_train, rng, batch_size)
    test_codes, test_factors = generate_batch(ground_truth, represent, num_test, rng, batch_size)
    if method == "gbt":
        seed = int(rng.integers(2**31))
        importance, train_score, test_score = gbt_importance(codes, factors, test_codes, test_factors, seed)
    else:
        weights = ridge_fit(codes, factors)
        importance = importance_matrix(weights)
        train_score = float(np.mean(r_squared(weights, codes, factors, codes, factors)))
        test_score = float(np.mean(r_squared(weights, test_codes, test_factors, codes, factors)))
    return {"dci_disentanglement": dci_disentanglement_from_importance(importance),
            "dci_completeness": dci_completeness_from_importance(importance),
            "dci_informativeness_train": train_score,
            "dci_informativeness_test": test_score,
            "dci_method": method,
            "dci_importance": importance.tolist()}


def all_metrics(ground_truth: GroundTruth, represent: Representation, seed: int = 0, *,
                num_samples: int = 10_000, num_votes: int = 10_000, batch_size: int = 64,
                dci_method: str = "auto") -> dict:
    """MIG, FactorVAE score and DCI; disentanglement_lib's counts by default (10 000 each).

    `num_samples` codes for MIG, DCI and the FactorVAE variance estimate; `num_votes`
    FactorVAE training votes (half as many evaluation votes, as the library).
    """
    fv = factor_vae_score(ground_truth, represent, np.random.default_rng(seed + 1), batch_size=batch_size,
                          num_train=num_votes, num_eval=max(num_votes // 2, 1),
                          num_variance_estimate=num_samples)
    mig_scores = mig(ground_truth, represent, np.random.default_rng(seed), num_train=num_samples,
                     batch_size=batch_size)
    return {
        "mig": mig_scores["discrete_mig"],
        "mig_per_factor": mig_scores["mig_per_factor"],
        "factor_vae_score": fv["eval_accuracy"],
        "factor_vae_train_accuracy": fv["train_accuracy"],
        "factor_vae_active_dims": fv["num_active_dims"],
        "factor_vae_per_factor": fv["eval_accuracy_per_factor"],
        **dci(ground_truth, represent, np.random.default_rng(seed + 2), num_train=num_samples,
              num_test=max(num_samples // 2, 1), batch_size=batch_size, method=dci_method),
    }


# --------------------------------------------------------------------------- the factor grid

def grid_ground_truth(factor_sizes) -> tuple[GroundTruth, Callable[[np.ndarray], np.ndarray]]:
    """A ground truth whose observations are the factors themselves, and its table lookup.

    Observations are a function of the factors, so a model's codes for the whole grid
    (one row per combination, in `np.ravel_multi_index` order) answer every metric's
    queries: `represent = table_representation(codes, factor_sizes)`.
    """
    return GroundTruth(tuple(int(n) for n in factor_sizes), lambda factors: np.asarray(factors))


def table_representation(codes: np.ndarray, factor_sizes) -> Representation:
    """factors (N, F) → the rows of the grid's code table (prod(sizes), D)."""
    sizes = tuple(int(n) for n in factor_sizes)
    if len(codes) != int(np.prod(sizes)):
        raise ValueError(f"a grid of {sizes} has {int(np.prod(sizes))} combinations; "
                         f"the code table has {len(codes)} rows")
    table = np.asarray(codes, np.float64)
    return lambda factors: table[np.ravel_multi_index(np.asarray(factors).T, sizes)]


def grid_metrics(codes: np.ndarray, factor_sizes, seed: int = 0, **kwargs) -> dict:
    """Every metric of `all_metrics` from a code table of the whole factor grid (seconds, not hours)."""
    truth = grid_ground_truth(factor_sizes)
    return all_metrics(truth, table_representation(codes, factor_sizes), seed, **kwargs)


def normalised_mutual_info(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """(D, F) mutual information of each binned code with each factor over the factor's entropy.

    1 when a code dimension determines the factor; MIG's matrix before the gap is taken.
    """
    binned = histogram_discretize(codes, num_bins)
    h = np.array([entropy(factors[:, k]) for k in range(factors.shape[1])])
    return np.array([[mutual_info(binned[:, j], factors[:, k]) / h[k] for k in range(factors.shape[1])]
                     for j in range(codes.shape[1])])


def factor_labels(information: np.ndarray, factor_names) -> list[tuple[str, float]]:
    """Per code dimension: (the factor it carries most information about, that normalised MI).

    information: (D, F) from `normalised_mutual_info`.
    """
    information = np.asarray(information, np.float64)
    return [(factor_names[int(np.argmax(row))], float(np.max(row))) for row in information]


# --------------------------------------------------------------------------- command (python main.py metrics)

def measure_run(run_dir, samples: int = 2000, votes: int = 300, seed: int = 0) -> dict:
    """MIG, FactorVAE, DCI and reconstruction quality of a run trained on the synthetic façades."""
    from pathlib import Path

    from common.config import ConfigError
    from vae import evaluate, latents, rundir

    config, encoder, decoder = rundir.load_coder(Path(run_dir))
    if not config.data.startswith("synthetic"):
        raise ConfigError(f"--run-dir: {run_dir} was trained on --data {config.data}; disentanglement "
                          "metrics need known factors (--data synthetic or synthetic_grid)")
    if samples < 20 or votes < 1:
        raise ConfigError(f"--samples must be >= 20 and --votes >= 1, got {samples} and {votes}")
    truth = synthetic_ground_truth(config.image_size)

    def represent(images):
        return latents.encode_means(encoder, images)[0]

    results = all_metrics(truth, represent, seed, num_samples=samples, num_votes=votes)
    images = truth.observations(truth.sample_factors(min(samples, 256), np.random.default_rng(seed + 3)))
    quality = evaluate.image_quality(images, np.asarray(decoder(represent(images), training=False)))
    results.update(reconstruction_psnr=float(np.mean(quality["psnr"])),
                   reconstruction_ssim=float(np.mean(quality["ssim"])),
                   metric_samples=samples, metric_votes=votes)
    step = rundir.final_step(Path(run_dir), config.validate_every)
    evaluate.write_metrics({**results, "step": step}, run_dir, step)
    log.info("MIG %.3f, FactorVAE %.3f, DCI disentanglement %.3f (%s), PSNR %.2f dB -> %s",
             results["mig"], results["factor_vae_score"], results["dci_disentanglement"],
             results["dci_method"], results["reconstruction_psnr"], Path(run_dir) / "metrics.json")
    return results
