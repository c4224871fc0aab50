"""The RL proposal policy: one independent categorical (softmax over logits) per discrete choice,
trained by REINFORCE with a moving-average baseline on the rewards of finished trials."""
import numpy as np


def _softmax(logits, temperature=1.0):
    z = np.asarray(logits, dtype=np.float64) / max(temperature, 1e-6)
    z = z - z.max()
    p = np.exp(z)
    return p / p.sum()


class CategoricalPolicy:
    """Independent categoricals over named choices.

    sample(rng, sizes) draws an index per choice; update(indices, reward) does one REINFORCE
    step: logits += lr * (reward - baseline) / scale * (onehot - p), then moves the baseline
    towards the reward (baseline = decay * baseline + (1 - decay) * reward). `scale` is the
    standard deviation of the rewards seen so far (1 before two rewards), so the step size does
    not depend on the objective's units.
    """

    def __init__(self, learning_rate=0.3, baseline_decay=0.8, temperature=1.0):
        self.learning_rate = float(learning_rate)
        self.baseline_decay = float(baseline_decay)
        self.temperature = float(temperature)
        self.logits = {}  # name -> list of floats
        self.baseline = None
        self.rewards = []  # kept for the reward scale (bounded below)

    def ensure(self, name, size):
        cur = self.logits.get(name)
        if cur is None:
            self.logits[name] = [0.0] * int(size)
        elif len(cur) < size:  # the space grew (new values): new options start neutral
            cur.extend([0.0] * (int(size) - len(cur)))

    def probs(self, name):
        return _softmax(self.logits[name], self.temperature)

    def sample_index(self, name, size, rng):
        self.ensure(name, size)
        p = self.probs(name)[:size]
        p = p / p.sum()
        return int(rng.choice(size, p=p))

    def reward_scale(self):
        """The standard deviation of the rewards seen (1.0 before two): the unit of a step."""
        if len(self.rewards) < 2:
            return 1.0
        s = float(np.std(self.rewards))
        return s if s > 1e-12 else 1.0

    def update(self, indices, reward):
        """One REINFORCE step for a sampled configuration {name: index} with `reward`."""
        reward = float(reward)
        if not np.isfinite(reward):
            return
        self.rewards.append(reward)
        self.rewards = self.rewards[-200:]
        if self.baseline is None:
            self.baseline = reward
            return
        advantage = (reward - self.baseline) / self.reward_scale()
        for name, idx in indices.items():
            if name not in self.logits or idx is None:
                continue
            p = self.probs(name)
            grad = -p
            grad[idx] += 1.0
            self.logits[name] = list(np.asarray(self.logits[name]) + self.learning_rate
                                     * advantage * grad)
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward

    def mode(self):
        return {name: int(np.argmax(v)) for name, v in self.logits.items()}

    def get_state(self):
        return {"logits": {k: [float(x) for x in v] for k, v in self.logits.items()},
                "baseline": self.baseline, "rewards": [float(r) for r in self.rewards],
                "learning_rate": self.learning_rate, "baseline_decay": self.baseline_decay,
                "temperature": self.temperature}

    def set_state(self, state):
        self.logits = {k: list(v) for k, v in state["logits"].items()}
        self.baseline = state["baseline"]
        self.rewards = list(state["rewards"])
        self.learning_rate = state.get("learning_rate", self.learning_rate)
        self.baseline_decay = state.get("baseline_decay", self.baseline_decay)
        self.temperature = state.get("temperature", self.temperature)
