"""NPASOracle: RL proposals ranked by Bayesian optimization, with a latency budget.

Each new trial:
  1. the policy (independent categoricals, REINFORCE) first learns from trials that finished
     since the last call (reward = signed objective score; a trial measured over the budget, or a
     candidate predicted over it, gets a penalty reward);
  2. it samples a pool of `pool_size` distinct, untried configurations;
  3. before `num_initial_points` trials have completed they are taken in sampled order; after,
     a Gaussian process (scikit-learn) fitted on completed trials scores them with UCB or EI;
  4. candidates are checked in that order with the latency predictor; those predicted over the
     budget (or that the predictor cannot build) are rejected without training; the first
     feasible one becomes the trial.
"""
import collections
import math
import warnings

import numpy as np
from keras_tuner.src.engine import oracle as oracle_module
from keras_tuner.src.engine import trial as trial_module

from npas_keras.tuner.policy import CategoricalPolicy
from npas_keras.tuner.space import SpaceEncoder, discrete_values, value_index

LATENCY_METRIC = "latency_ms"


def _gp_regressor(dim, seed, restarts, ard=False):
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    kernel = (ConstantKernel(1.0, (1e-3, 1e3))
              * Matern(length_scale=np.ones(max(dim, 1)) if ard else 1.0, length_scale_bounds=(1e-2, 1e2), nu=2.5)
              + WhiteKernel(1e-3, (1e-6, 1e0)))
    return GaussianProcessRegressor(kernel=kernel, normalize_y=True,
                                    n_restarts_optimizer=restarts, random_state=seed)


def fit_gp(x, y, seed=0, restarts=2, ard=False):
    """A scikit-learn GaussianProcessRegressor (constant * Matern 5/2 + white noise; one length
    scale, or one per input dimension with ard=True) fitted on x, y (normalized)."""
    gp = _gp_regressor(x.shape[1], seed, restarts, ard)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gp.fit(x, y)
    return gp


def acquisition_scores(gp, x, kind="ucb", beta=2.0, best=None, xi=0.01):
    """UCB (mu + beta * sigma) or EI over the incumbent `best`, for maximization."""
    mu, sigma = gp.predict(x, return_std=True)
    if kind == "ucb":
        return mu + beta * sigma
    if kind == "ei":
        from scipy.stats import norm

        best = np.max(mu) if best is None else best
        sigma = np.maximum(sigma, 1e-12)
        z = (mu - best - xi) / sigma
        return (mu - best - xi) * norm.cdf(z) + sigma * norm.pdf(z)
    raise ValueError(f"acquisition must be 'ucb' or 'ei', got {kind!r}")


class NPASOracle(oracle_module.Oracle):
    """KerasTuner oracle for joint architecture + per-layer pruning search (NPAS).

    Args:
        objective, max_trials, hyperparameters, allow_new_entries, tune_new_entries, seed,
            max_retries_per_trial, max_consecutive_failed_trials: as keras_tuner.Oracle.
        latency_predictor: callable(values dict) -> predicted ms (raise ValueError for a
            configuration that cannot be built). None: no filtering.
        latency_budget_ms: candidates predicted (and trials measured) above it are infeasible.
        num_initial_points: trials taken straight from the policy before the GP ranks.
        pool_size: candidates sampled from the policy per trial.
        acquisition: 'ucb' or 'ei'; beta: UCB exploration weight.
        learning_rate, baseline_decay, temperature: the REINFORCE policy's settings.
        max_pool_rounds: how many pools to try when all candidates are infeasible before stopping.
        gp_restarts: optimizer restarts for the GP's kernel hyperparameters.
    """

    def __init__(self, objective=None, max_trials=10, hyperparameters=None,
                 latency_predictor=None, latency_budget_ms=None, num_initial_points=3,
                 pool_size=32, acquisition="ucb", beta=2.0, learning_rate=0.3,
                 baseline_decay=0.8, temperature=1.0, max_pool_rounds=8, gp_restarts=2,
                 allow_new_entries=True, tune_new_entries=True, seed=None,
                 max_retries_per_trial=0, max_consecutive_failed_trials=3):
        if acquisition not in ("ucb", "ei"):
            raise ValueError(f"acquisition must be 'ucb' or 'ei', got {acquisition!r}")
        if latency_budget_ms is not None and not latency_budget_ms > 0:
            raise ValueError(f"latency_budget_ms must be positive, got {latency_budget_ms}")
        super().__init__(objective=objective, max_trials=max_trials,
                         hyperparameters=hyperparameters, allow_new_entries=allow_new_entries,
                         tune_new_entries=tune_new_entries, seed=seed,
                         max_retries_per_trial=max_retries_per_trial,
                         max_consecutive_failed_trials=max_consecutive_failed_trials)
        self.latency_predictor = latency_predictor
        self.latency_budget_ms = latency_budget_ms
        self.num_initial_points = int(num_initial_points)
        self.pool_size = int(pool_size)
        self.acquisition = acquisition
        self.beta = float(beta)
        self.max_pool_rounds = int(max_pool_rounds)
        self.gp_restarts = int(gp_restarts)
        self.policy = CategoricalPolicy(learning_rate, baseline_decay, temperature)
        self._consumed = []          # trial ids whose reward the policy has learned from
        self._draws = 0              # pools drawn (seeds the per-pool RNG deterministically)
        self._rejected = []          # [{"values", "predicted_ms", "reason"}] (last 200)
        self._rejected_count = 0
        self._latency_cache = {}     # values hash -> predicted ms (or None = cannot build)
        self._predicted = {}         # trial id -> predicted ms

    # -- helpers -------------------------------------------------------------------------------
    def _sign(self):
        return -1.0 if getattr(self.objective, "direction", "max") == "min" else 1.0

    def _completed(self):
        return [t for t in self.trials.values()
                if t.status == trial_module.TrialStatus.COMPLETED and t.score is not None
                and np.isfinite(t.score)]

    def trial_latency(self, trial):
        if trial.metrics.exists(LATENCY_METRIC):
            return trial.metrics.get_last_value(LATENCY_METRIC)
        return None

    def is_feasible_trial(self, trial):
        if self.latency_budget_ms is None:
            return True
        lat = self.trial_latency(trial)
        return lat is None or lat <= self.latency_budget_ms

    def _penalty(self):
        rewards = self.policy.rewards
        if not rewards:
            return None
        spread = float(np.std(rewards)) if len(rewards) > 1 else abs(rewards[0]) * 0.1
        return min(rewards) - max(spread, 1e-3)

    def _indices(self, values):
        out = {}
        for hp in self.hyperparameters.space:
            if hp.name in values:
                out[hp.name] = value_index(discrete_values(hp), values[hp.name])
        return out

    def _learn_from_finished(self):
        done = set(self._consumed)
        for trial_id in list(self.end_order):
            if trial_id in done:
                continue
            trial = self.trials[trial_id]
            self._consumed.append(trial_id)
            if trial.status != trial_module.TrialStatus.COMPLETED or trial.score is None:
                continue
            if not np.isfinite(trial.score):
                continue
            reward = self._sign() * float(trial.score)
            if not self.is_feasible_trial(trial):
                reward = self._penalty() if self._penalty() is not None else reward - 1.0
            self.policy.update(self._indices(trial.hyperparameters.values), reward)

    def _sample_values(self, rng):
        from keras_tuner.src.engine import hyperparameters as hp_module

        hps = hp_module.HyperParameters()
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if hps.is_active(hp):
                values = discrete_values(hp)
                idx = self.policy.sample_index(hp.name, len(values), rng)
                hps.values[hp.name] = values[idx]
        return hps.values

    def _sample_pool(self, rng):
        pool, hashes = [], set()
        attempts = 0
        while len(pool) < self.pool_size and attempts < self.pool_size * 10:
            attempts += 1
            values = self._sample_values(rng)
            h = self._compute_values_hash(values)
            if h in hashes or self._duplicate(values):
                continue
            hashes.add(h)
            pool.append(values)
        return pool

    def predict_latency(self, values):
        """Predicted ms for a configuration (cached); None when it cannot be built."""
        if self.latency_predictor is None:
            return 0.0
        h = self._compute_values_hash(values)
        if h not in self._latency_cache:
            try:
                ms = float(self.latency_predictor(dict(values)))
            except ValueError as exc:  # not a valid configuration for this model
                warnings.warn(f"latency predictor rejected a configuration: {exc}")
                ms = None
            self._latency_cache[h] = ms
        return self._latency_cache[h]

    def is_feasible(self, values):
        ms = self.predict_latency(values)
        if ms is None:
            return False, ms, "invalid"
        if self.latency_budget_ms is not None and ms > self.latency_budget_ms:
            return False, ms, "over_budget"
        return True, ms, None

    def _reject(self, values, ms, reason):
        self._rejected_count += 1
        self._rejected.append({"values": dict(values), "predicted_ms": ms, "reason": reason})
        self._rejected = self._rejected[-200:]
        penalty = self._penalty()
        if penalty is not None:
            self.policy.update(self._indices(values), penalty)

    def rank_pool(self, pool):
        """Pool indices in the order to try them: sampled order, or by acquisition."""
        completed = self._completed()
        if len(completed) < max(self.num_initial_points, 2) or len(pool) <= 1:
            return list(range(len(pool)))
        encoder = SpaceEncoder(self.hyperparameters)
        if encoder.dim == 0:
            return list(range(len(pool)))
        x = encoder.encode_many([t.hyperparameters.values for t in completed])
        y = self._sign() * np.asarray([t.score for t in completed], dtype=np.float64)
        gp = fit_gp(x, y, seed=int(self.seed) % (2**31), restarts=self.gp_restarts)
        scores = acquisition_scores(gp, encoder.encode_many(pool), self.acquisition, self.beta,
                                    best=float(np.max(y)))
        return list(np.argsort(-scores, kind="stable"))

    # -- Oracle API ------------------------------------------------------------------------------
    def populate_space(self, trial_id):
        self._learn_from_finished()
        for _ in range(self.max_pool_rounds):
            rng = np.random.default_rng([int(self.seed) % (2**31), self._draws])
            self._draws += 1
            pool = self._sample_pool(rng)
            if not pool:
                return {"status": trial_module.TrialStatus.STOPPED, "values": None}
            for i in self.rank_pool(pool):
                values = pool[i]
                ok, ms, reason = self.is_feasible(values)
                if ok:
                    self._predicted[trial_id] = ms
                    return {"status": trial_module.TrialStatus.RUNNING, "values": values}
                self._reject(values, ms, reason)
        warnings.warn(f"NPASOracle: no configuration within the latency budget "
                      f"({self.latency_budget_ms} ms) after {self.max_pool_rounds} pools; "
                      "stopping the search")
        return {"status": trial_module.TrialStatus.STOPPED, "values": None}

    def get_best_trials(self, num_trials=1):
        """Best trials, those measured within the latency budget first."""
        ranked = super().get_best_trials(len(self.trials) or 1)
        ranked = sorted(ranked, key=lambda t: (
            t.status != trial_module.TrialStatus.COMPLETED, not self.is_feasible_trial(t)))
        return ranked[:num_trials]

    @property
    def rejected_count(self):
        return self._rejected_count

    def predicted_latency(self, trial_id):
        return self._predicted.get(trial_id)

    def get_state(self):
        state = super().get_state()
        state.update({
            "npas": {
                "policy": self.policy.get_state(),
                "consumed": list(self._consumed),
                "draws": self._draws,
                "rejected": self._rejected,
                "rejected_count": self._rejected_count,
                "latency_cache": dict(self._latency_cache),
                "predicted": dict(self._predicted),
                "latency_budget_ms": self.latency_budget_ms,
            }
        })
        return state

    def set_state(self, state):
        super().set_state(state)
        npas = state.get("npas")
        if npas is None:
            return
        self.policy.set_state(npas["policy"])
        self._consumed = list(npas["consumed"])
        self._draws = int(npas["draws"])
        self._rejected = list(npas["rejected"])
        self._rejected_count = int(npas["rejected_count"])
        self._latency_cache = dict(npas["latency_cache"])
        self._predicted = dict(npas["predicted"])
