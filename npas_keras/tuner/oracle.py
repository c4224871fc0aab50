"""NPASOracle: RL proposals ranked by Bayesian optimization, with a latency budget.

Each new trial:
  0. the `initial_values` (e.g. the rule-based mapping at full width) come first, in order, each
     one that the predictor puts within the budget;
  1. the policy (independent categoricals, REINFORCE) learns from trials that finished since the
     last call (reward = signed objective score within the budget; over it the reward drops with
     the overshoot, see `_reward`);
  2. it samples a pool of `pool_size` distinct, untried configurations, and the latency predictor
     (scaled by the measured / predicted ratio of finished trials, so a systematic predictor
     error is corrected) rejects those over the budget without training;
  3. before `num_initial_points` trials have completed the feasible rest is taken closest to the
     budget first (more latency spent, more weights kept); after, a Gaussian process
     (scikit-learn) fitted on completed trials, with latency / budget as one more input, scores
     them with UCB or EI; the best becomes the trial.
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
        initial_values: value dicts tried first, in order (missing hps take their defaults);
            those predicted over the budget or already tried are skipped.
        constraint: callable(values dict) -> None when the configuration is allowed, else a
            short reason (e.g. 'over_bops'): an exact check before training (NPASTuner's BOPs
            budget), applied like the latency filter.
        signature: callable(values dict) -> str, equal for configurations that give the same
            model (NPASTuner's: the build function's own hps and the schemes and bits the built
            model gets; hps of layers another architecture has do not count). A candidate
            with a tried trial's signature is a duplicate. None: the values themselves.
    """

    def __init__(self, objective=None, max_trials=10, hyperparameters=None,
                 latency_predictor=None, latency_budget_ms=None, num_initial_points=3,
                 pool_size=32, acquisition="ucb", beta=2.0, learning_rate=0.3,
                 baseline_decay=0.8, temperature=1.0, max_pool_rounds=8, gp_restarts=2,
                 initial_values=None, constraint=None, signature=None, allow_new_entries=True,
                 tune_new_entries=True, seed=None, max_retries_per_trial=0,
                 max_consecutive_failed_trials=3):
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
        self.constraint = constraint
        self.signature = signature
        self._signatures = {}        # values hash -> signature
        self.num_initial_points = int(num_initial_points)
        self.pool_size = int(pool_size)
        self.acquisition = acquisition
        self.beta = float(beta)
        self.max_pool_rounds = int(max_pool_rounds)
        self.gp_restarts = int(gp_restarts)
        self.policy = CategoricalPolicy(learning_rate, baseline_decay, temperature)
        self.initial_values = [dict(v) for v in (initial_values or [])]
        self._seeded = 0             # initial_values consumed
        self._consumed = []          # trial ids whose reward the policy has learned from
        self._draws = 0              # pools drawn (seeds the per-pool RNG deterministically)
        self._rejected = []          # [{"values", "predicted_ms", "reason"}] (last 200)
        self._rejected_count = 0
        self._latency_cache = {}     # values hash -> predicted ms (or None = cannot build)
        self._predicted = {}         # trial id -> predicted ms
        self._admitted = {}          # trial id -> predicted ms x latency_ratio() when admitted

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

    def _overshoot(self, ms):
        """Relative excess of `ms` over the budget (0 within it)."""
        if self.latency_budget_ms is None or ms is None:
            return 0.0
        return max(0.0, float(ms) / self.latency_budget_ms - 1.0)

    def _reward(self, score, ms):
        """The policy's reward for a trial: its (signed) score within the budget, whatever the
        slack (a model far under budget earns nothing extra); over it, the score less one reward
        std plus one more per 10% of overshoot (capped at 3): a near miss (latency noise) still
        says more about the choices than one far over."""
        over = self._overshoot(ms)
        if over <= 0.0:
            return score
        return score - self.policy.reward_scale() * min(1.0 + over / 0.1, 3.0)

    def latency_ratio(self):
        """Median measured / predicted latency of finished trials (1.0 before any): the factor
        that corrects the predictor's systematic error on this search's models."""
        ratios = []
        for trial_id, ms in self._predicted.items():
            trial = self.trials.get(trial_id)
            measured = None if trial is None else self.trial_latency(trial)
            if ms and measured:
                ratios.append(float(measured) / float(ms))
        return float(np.median(ratios)) if ratios else 1.0

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
            reward = self._reward(self._sign() * float(trial.score), self.trial_latency(trial))
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

    def _key(self, values):
        """`signature(values)` (cached), or the values' hash without a signature."""
        h = self._compute_values_hash(values)
        if self.signature is None:
            return h
        if h not in self._signatures:
            self._signatures[h] = self.signature(dict(values))
        return self._signatures[h]

    def _duplicate(self, values):
        """Tried before: the same values, or (with `signature`) the same model."""
        if super()._duplicate(values):
            return True
        if self.signature is None:
            return False
        key = self._key(values)
        return any(self._key(t.hyperparameters.values) == key for t in self.trials.values())

    def _sample_pool(self, rng):
        pool, hashes = [], set()
        attempts = 0
        while len(pool) < self.pool_size and attempts < self.pool_size * 10:
            attempts += 1
            values = self._sample_values(rng)
            h = self._key(values)
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

    def is_feasible(self, values, ratio=None):
        """(ok, predicted ms, reason); the prediction is scaled by `latency_ratio()`."""
        ms = self.predict_latency(values)
        if ms is None:
            return False, ms, "invalid"
        reason = None if self.constraint is None else self.constraint(dict(values))
        if reason:
            return False, ms, str(reason)
        ratio = self.latency_ratio() if ratio is None else ratio
        if self.latency_budget_ms is not None and ms * ratio > self.latency_budget_ms:
            return False, ms, "over_budget"
        return True, ms, None

    def _reject(self, values, ms, reason, learn=False):
        """Counts a candidate rejected untrained; with `learn` (a pool with no feasible
        candidate) the policy also learns from it: the expected score (baseline) less the
        overshoot penalty of `_reward`. Otherwise the predictor's filter alone keeps such
        candidates out, so the policy is not pushed far under the budget by them."""
        self._rejected_count += 1
        self._rejected.append({"values": dict(values), "predicted_ms": ms, "reason": reason})
        self._rejected = self._rejected[-200:]
        if not learn:
            return
        if reason == "over_budget" and self.policy.baseline is not None:
            reward = self._reward(self.policy.baseline, ms * self.latency_ratio())
        else:
            reward = self._penalty()
        if reward is not None:
            self.policy.update(self._indices(values), reward)

    def rank_pool(self, pool, latencies=None):
        """Pool indices in the order to try them: closest under the budget first before the GP,
        then by acquisition (GP inputs: the encoded values and latency / budget)."""
        completed = self._completed()
        budget = self.latency_budget_ms
        if latencies is None:
            latencies = [self.predict_latency(v) for v in pool]
        ratio = self.latency_ratio()
        lat = np.asarray([np.nan if ms is None else ms * ratio for ms in latencies])
        if len(completed) < max(self.num_initial_points, 2) or len(pool) <= 1:
            if budget is None or self.latency_predictor is None:
                return list(range(len(pool)))
            return list(np.argsort(-np.nan_to_num(lat, nan=-np.inf), kind="stable"))
        encoder = SpaceEncoder(self.hyperparameters)
        x = encoder.encode_many([t.hyperparameters.values for t in completed])
        xp = encoder.encode_many(pool)
        if budget is not None and self.latency_predictor is not None:
            done = []
            for t in completed:
                ms = self.trial_latency(t)
                if ms is None:
                    ms = self.predict_latency(t.hyperparameters.values)
                    ms = np.nan if ms is None else ms * ratio
                done.append(ms)
            x = np.hstack([x, np.nan_to_num(np.asarray(done, float) / budget, nan=0.0)[:, None]])
            xp = np.hstack([xp, np.nan_to_num(lat / budget, nan=0.0)[:, None]])
        if x.shape[1] == 0:
            return list(range(len(pool)))
        y = self._sign() * np.asarray([t.score for t in completed], dtype=np.float64)
        gp = fit_gp(x, y, seed=int(self.seed) % (2**31), restarts=self.gp_restarts)
        scores = acquisition_scores(gp, xp, self.acquisition, self.beta, best=float(np.max(y)))
        return list(np.argsort(-scores, kind="stable"))

    # -- Oracle API ------------------------------------------------------------------------------
    def _next_initial(self, trial_id):
        while self._seeded < len(self.initial_values):
            hps = self.get_space()
            hps.values.update(self.initial_values[self._seeded])
            self._seeded += 1
            values = hps.values
            if self._duplicate(values):
                continue
            ratio = self.latency_ratio()
            ok, ms, reason = self.is_feasible(values, ratio)
            if ok:
                self._predicted[trial_id] = ms
                self._admitted[trial_id] = ms * ratio
                return values
            self._reject(values, ms, reason)
        return None

    def populate_space(self, trial_id):
        self._learn_from_finished()
        values = self._next_initial(trial_id)
        if values is not None:
            return {"status": trial_module.TrialStatus.RUNNING, "values": values}
        for _ in range(self.max_pool_rounds):
            rng = np.random.default_rng([int(self.seed) % (2**31), self._draws])
            self._draws += 1
            pool = self._sample_pool(rng)
            if not pool:
                return {"status": trial_module.TrialStatus.STOPPED, "values": None}
            ratio = self.latency_ratio()
            checks = [self.is_feasible(v, ratio) for v in pool]
            feasible = [i for i, c in enumerate(checks) if c[0]]
            for values, (ok, ms, reason) in zip(pool, checks):
                if not ok:
                    self._reject(values, ms, reason, learn=not feasible)
            if not feasible:
                continue
            sub = [pool[i] for i in feasible]
            best = feasible[self.rank_pool(sub, [checks[i][1] for i in feasible])[0]]
            self._predicted[trial_id] = checks[best][1]
            self._admitted[trial_id] = checks[best][1] * ratio
            return {"status": trial_module.TrialStatus.RUNNING, "values": pool[best]}
        reasons = sorted({r["reason"] for r in self._rejected[-self.pool_size:]})
        warnings.warn(f"NPASOracle: no configuration within the latency budget "
                      f"({self.latency_budget_ms} ms)"
                      + (" and the constraint" if self.constraint is not None else "")
                      + f" after {self.max_pool_rounds} pools (last rejections: "
                      f"{', '.join(reasons)}); stopping the search")
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

    def admitted_latency(self, trial_id):
        """The prediction a trial was admitted with: predicted ms x `latency_ratio()` at the
        time, the value `is_feasible` held to the budget."""
        return self._admitted.get(trial_id)

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
                "admitted": dict(self._admitted),
                "latency_budget_ms": self.latency_budget_ms,
                "seeded": self._seeded,
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
        self._admitted = dict(npas.get("admitted", {}))
        self._seeded = int(npas.get("seeded", 0))
