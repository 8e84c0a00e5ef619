"""Load-test scenarios: which pipeline, which model, and a seeded distribution of text lengths.

A scenario is a small JSON file (tritonize/planner/scenarios/*.json) so that runs are shared and repeatable:

    {"name": "embed-mix", "pipeline": "embed", "model": "all-minilm-l6-v2",
     "words": {"median": 14, "sigma": 0.6, "min": 4, "max": 64}, "rows_per_request": 1, "seed": 1}

Word counts are log-normal (many short texts, a tail of long ones), clipped to [min, max].
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tritonize.planner.workloads import WORDS

# pipeline -> the outputs a unary call asks for; "generate" streams over gRPC instead (TTFT, tokens/s);
# "chat" asks a chatbot (ChatClient) and records each call under the way it was answered.
PIPELINES = {"embed": ["EMBEDDING"], "classify": ["LABEL", "PROBABILITIES"], "generate": [], "chat": []}
SCENARIO_DIR = Path(__file__).parent / "scenarios"


@dataclass
class WordCounts:
    median: float = 14
    sigma: float = 0.6
    min: int = 4
    max: int = 64

    def draw(self, rng: random.Random) -> int:
        import math

        return min(self.max, max(self.min, int(rng.lognormvariate(math.log(self.median), self.sigma))))


@dataclass
class Scenario:
    name: str
    pipeline: str  # a key of PIPELINES
    model: str  # the served ensemble
    words: WordCounts = field(default_factory=WordCounts)
    rows_per_request: int = 1
    seed: int = 1
    pool_size: int = 2000
    bad_every: int = 0  # every Nth request of a user sends invalid UTF-8 (a failure to count), 0 = never
    params: dict = field(default_factory=dict)  # generation parameters, e.g. {"max_new_tokens": 32}
    questions: list = field(default_factory=list)  # a fixed pool (chat-mix: paraphrases, near misses, unrelated)

    def __post_init__(self):
        if self.pipeline not in PIPELINES:
            raise ValueError(f"scenario {self.name}: pipeline must be one of {sorted(PIPELINES)}, not {self.pipeline!r}")
        if isinstance(self.words, dict):
            self.words = WordCounts(**self.words)

    @classmethod
    def load(cls, path_or_name: str | Path) -> "Scenario":
        path = Path(path_or_name)
        if not path.exists():
            path = SCENARIO_DIR / f"{path_or_name}.json"
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @property
    def outputs(self) -> list[str]:
        return PIPELINES[self.pipeline]

    def texts(self) -> list[str]:
        """The pool every user draws from: the same texts for the same seed, in every run."""
        rng = random.Random(self.seed)
        if self.questions:  # the scenario's own questions, shuffled, repeated to the pool's size
            return [self.questions[i % len(self.questions)] for i in rng.sample(range(self.pool_size), self.pool_size)]
        return [" ".join(rng.choices(WORDS, k=self.words.draw(rng))).capitalize() + "." for _ in range(self.pool_size)]
