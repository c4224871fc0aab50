"""NPASOracle, its RL policy and its GP ranking on synthetic objectives (no training)."""
import json

import keras_tuner
import numpy as np
import pytest
from keras_tuner.src.engine import trial as trial_module

from npas_keras.tuner import CategoricalPolicy, NPASOracle, SpaceEncoder, fit_gp
from npas_keras.tuner.space import discrete_values

N_CHOICES, N_OPTIONS = 6, 4
TARGET = [3, 1, 0, 2, 3, 1]  # the known optimum of the synthetic objective


def synthetic_space():
    hps = keras_tuner.HyperParameters()
    for i in range(N_CHOICES):
        hps.Choice(f"c{i}", list(range(N_OPTIONS)))
    hps.Choice("scheme", ["dense", "bcr", "pattern"])
    hps.Float("lr", 1e-4, 1e-1, sampling="log")
    return hps


def synthetic_score(values):
    """Max 1.0 at TARGET with scheme 'bcr'; a smooth-ish function of the indices."""
    s = sum(1.0 - abs(values[f"c{i}"] - TARGET[i]) / 3.0 for i in range(N_CHOICES)) / N_CHOICES
    return 0.8 * s + 0.2 * (values["scheme"] == "bcr")


def synthetic_latency(values):
    """'ms' grows with the chosen indices; pattern is cheap, dense costly."""
    return sum(values[f"c{i}"] for i in range(N_CHOICES)) + {"dense": 3, "bcr": 1,
                                                              "pattern": 0}[values["scheme"]]


def run_oracle(oracle, n, tmp_path, name="p"):
    oracle._set_project_dir(str(tmp_path), name)
    oracle.verbose = 0
    proposals = []
    for i in range(n):
        trial = oracle.create_trial(f"tuner{i}")
        if trial.status == trial_module.TrialStatus.STOPPED:
            break
        values = dict(trial.hyperparameters.values)
        proposals.append(values)
        oracle.update_trial(trial.trial_id, {"score": synthetic_score(values)})
        trial.status = trial_module.TrialStatus.COMPLETED
        oracle.end_trial(trial)
    return proposals


def make_oracle(budget=9.0, seed=3, max_trials=12, **kw):
    return NPASOracle(objective=keras_tuner.Objective("score", "max"), max_trials=max_trials,
                      hyperparameters=synthetic_space(), latency_predictor=synthetic_latency,
                      latency_budget_ms=budget, seed=seed, pool_size=24, gp_restarts=0, **kw)


def test_proposals_are_valid_and_within_budget(tmp_path):
    oracle = make_oracle(budget=7.0)
    proposals = run_oracle(oracle, 12, tmp_path)
    assert len(proposals) == 12
    space = {hp.name: discrete_values(hp) for hp in synthetic_space().space}
    for values in proposals:
        assert set(values) == set(space)
        for name, v in values.items():
            if name == "lr":
                assert 1e-4 - 1e-12 <= v <= 1e-1 + 1e-12
            else:
                assert v in space[name]
        assert synthetic_latency(values) <= 7.0
    # distinct proposals, and over-budget candidates were really met and rejected
    assert len({json.dumps(p, sort_keys=True) for p in proposals}) == len(proposals)
    assert oracle.rejected_count > 0
    assert all(r["predicted_ms"] > 7.0 for r in oracle._rejected if r["reason"] == "over_budget")


def test_no_feasible_configuration_stops_the_search(tmp_path):
    oracle = make_oracle(budget=0.5, max_pool_rounds=2)  # min latency is 0 + pattern 0 -> only
    oracle.latency_predictor = lambda values: 100.0      # ...but make everything infeasible
    with pytest.warns(UserWarning, match="no configuration within the latency budget"):
        proposals = run_oracle(oracle, 3, tmp_path)
    assert proposals == []


def test_constraint_and_signature(tmp_path):
    """`constraint` rejects candidates untrained with its reason; `signature` makes
    configurations that differ only where the signature does not look duplicates."""
    def constraint(values):
        return "odd_c0" if values["c0"] % 2 else None

    def signature(values):  # lr and c5 do not change the "model"
        return json.dumps({k: v for k, v in values.items() if k not in ("lr", "c5")},
                          sort_keys=True)

    oracle = make_oracle(budget=12.0, max_trials=20, constraint=constraint, signature=signature)
    proposals = run_oracle(oracle, 20, tmp_path)
    assert len(proposals) == 20
    assert all(p["c0"] % 2 == 0 for p in proposals)
    assert len({signature(p) for p in proposals}) == len(proposals)
    assert any(r["reason"] == "odd_c0" for r in oracle._rejected)
    plain = run_oracle(make_oracle(budget=12.0, max_trials=20), 20, tmp_path, name="plain")
    assert any(p["c0"] % 2 for p in plain)  # without the constraint odd c0 is proposed


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="acquisition"):
        NPASOracle(objective="score", max_trials=2, acquisition="pi")
    with pytest.raises(ValueError, match="latency_budget_ms"):
        NPASOracle(objective="score", max_trials=2, latency_budget_ms=0)


def test_policy_improves_mean_reward_on_synthetic_objective():
    sizes = {f"c{i}": N_OPTIONS for i in range(N_CHOICES)}
    improvements = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        policy = CategoricalPolicy(learning_rate=0.3, baseline_decay=0.8)
        rewards = []
        for _ in range(150):
            idx = {name: policy.sample_index(name, n, rng) for name, n in sizes.items()}
            reward = sum(idx[f"c{i}"] == TARGET[i] for i in range(N_CHOICES)) / N_CHOICES
            rewards.append(reward)
            policy.update(idx, reward)
        first, last = np.mean(rewards[:30]), np.mean(rewards[-30:])
        improvements.append(last - first)
        # it has learned the optimum: the mode of each categorical is the target
        assert [policy.mode()[f"c{i}"] for i in range(N_CHOICES)] == TARGET
    # random sampling scores 1/4 on average; the trained policy is far above
    assert min(improvements) > 0.3


def kendall_tau(a, b):
    from scipy.stats import kendalltau

    return kendalltau(a, b).statistic


def test_gp_ranks_candidates_better_than_random():
    hps = synthetic_space()
    enc = SpaceEncoder(hps)
    rng = np.random.default_rng(0)

    def random_values():
        v = {f"c{i}": int(rng.integers(N_OPTIONS)) for i in range(N_CHOICES)}
        v["scheme"] = ["dense", "bcr", "pattern"][int(rng.integers(3))]
        v["lr"] = float(10 ** rng.uniform(-4, -1))
        return v

    train = [random_values() for _ in range(30)]
    test = [random_values() for _ in range(150)]
    gp = fit_gp(enc.encode_many(train), np.array([synthetic_score(v) for v in train]), seed=0,
                restarts=1)
    truth = np.array([synthetic_score(v) for v in test])
    tau_gp = kendall_tau(gp.predict(enc.encode_many(test)), truth)
    tau_random = np.mean([kendall_tau(rng.standard_normal(len(test)), truth)
                          for _ in range(20)])
    assert tau_gp > 0.4, tau_gp
    assert tau_gp > tau_random + 0.3
    # and the acquisition's top pick is among the best tenth of the pool
    from npas_keras.tuner import acquisition_scores

    best = int(np.argmax(acquisition_scores(gp, enc.encode_many(test), "ucb", beta=0.5)))
    assert truth[best] >= np.quantile(truth, 0.9)


def test_search_beats_random_proposals(tmp_path):
    """With the same budget, the oracle's best trial is at least random search's (3 seeds)."""
    wins = 0
    for seed in (1, 2, 3):
        npas = run_oracle(make_oracle(budget=9.0, seed=seed, max_trials=10), 10, tmp_path,
                          f"n{seed}")
        rand = keras_tuner.oracles.RandomSearchOracle(
            objective=keras_tuner.Objective("score", "max"), max_trials=10,
            hyperparameters=synthetic_space(), seed=seed)
        rand_props = [p for p in run_oracle(rand, 10, tmp_path, f"r{seed}")
                      if synthetic_latency(p) <= 9.0]
        best_npas = max(synthetic_score(p) for p in npas)
        best_rand = max([synthetic_score(p) for p in rand_props] or [0.0])
        wins += best_npas >= best_rand
    assert wins >= 2


def test_state_round_trips_and_resumes_identically(tmp_path):
    a = make_oracle(seed=7)
    run_oracle(a, 6, tmp_path, "a")
    state = json.loads(json.dumps(a.get_state()))  # must be JSON-serializable
    b = make_oracle(seed=7)
    b._set_project_dir(str(tmp_path), "a")
    b.trials = a.trials  # trials live in their own files; the oracle state refers to them
    b.set_state(state)
    def norm(st):
        st = json.loads(json.dumps(st))
        st["tried_so_far"] = sorted(st["tried_so_far"])
        return st

    assert norm(b.get_state()) == norm(state)
    assert b.policy.get_state() == a.policy.get_state()
    # both continue with the same proposals
    pa = a.populate_space("next")
    pb = b.populate_space("next")
    assert pa == pb and pa["status"] == "RUNNING"


def test_reload_from_project_directory(tmp_path):
    a = make_oracle(seed=5)
    run_oracle(a, 4, tmp_path, "resume")
    a.save()
    b = make_oracle(seed=5)
    b._set_project_dir(str(tmp_path), "resume")
    b.reload()
    assert sorted(b.trials) == sorted(a.trials)
    assert b.policy.get_state() == a.policy.get_state()
    assert b._rejected_count == a._rejected_count
    more = run_oracle(b, 3, tmp_path, "resume")
    assert len(b.trials) == 7 and all(synthetic_latency(v) <= 9.0 for v in more)


def test_initial_values_first_and_measured_latency_calibrates_the_filter(tmp_path):
    """initial_values come first (one predicted over the budget is skipped); once trials report
    a measured latency twice the prediction, only candidates whose prediction x 2 fits are
    proposed (the oracle's measured / predicted ratio; uncalibrated, up to 14 would pass)."""
    over = {f"c{i}": 3 for i in range(N_CHOICES)}
    over["scheme"] = "dense"                                          # predicted 21 > 14
    first = {f"c{i}": TARGET[i] if i < 3 else 0 for i in range(N_CHOICES)}
    first["scheme"] = "bcr"                                           # predicted 5
    oracle = make_oracle(budget=14.0, seed=4, initial_values=[over, first])
    oracle._set_project_dir(str(tmp_path), "calib")
    oracle.verbose = 0
    proposals = []
    for i in range(6):
        trial = oracle.create_trial(f"tuner{i}")
        assert trial.status != trial_module.TrialStatus.STOPPED
        values = dict(trial.hyperparameters.values)
        proposals.append(values)
        oracle.update_trial(trial.trial_id, {"score": synthetic_score(values),
                                             "latency_ms": 2.0 * synthetic_latency(values)})
        trial.status = trial_module.TrialStatus.COMPLETED
        oracle.end_trial(trial)
    assert {k: proposals[0][k] for k in first} == first
    assert oracle.rejected_count >= 1
    assert oracle.latency_ratio() == pytest.approx(2.0)
    assert all(2.0 * synthetic_latency(v) <= 14.0 for v in proposals[1:])
    assert json.loads(json.dumps(oracle.get_state()))["npas"]["seeded"] == 2
