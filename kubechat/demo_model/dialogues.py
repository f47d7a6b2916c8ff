"""The bundled question/answer set the demo model learns, and the chat samples built from it."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DIALOGUES_FILE = "dialogues.json"


@dataclass(frozen=True)
class QAPair:
    """One question and the exact answer the model must give to it."""

    question: str
    answer: str


@dataclass(frozen=True)
class Dialogues:
    """The training set: Q/A pairs and the question the build insists on (the seed question)."""

    pairs: tuple[QAPair, ...]
    seed_question: str

    @property
    def seed_pair(self) -> QAPair:
        """The pair whose question is the seed question."""
        return next(p for p in self.pairs if p.question == self.seed_question)

    def texts(self) -> list[str]:
        """Every question and answer, for training the tokenizer."""
        return [text for pair in self.pairs for text in (pair.question, pair.answer)]

    def conversations(
        self, *, second_turns: int, seed: int, after_seed: bool = False
    ) -> list[list[dict[str, str]]]:
        """Chat samples: each pair alone, plus ``second_turns`` pairs asked after another pair,
        plus (``after_seed``) every other pair asked after the seed exchange, the conversation
        a user of the README starts with.

        A sample's last message is the user question; the expected reply is that pair's answer.
        The earlier pair of a random two-turn sample is drawn with ``random.Random(seed)``.
        """
        rng = random.Random(seed)
        samples = [[_user(p.question)] for p in self.pairs]
        for i in range(second_turns):
            pair = self.pairs[i % len(self.pairs)]
            earlier = rng.choice([p for p in self.pairs if p is not pair])
            samples.append(_two_turns(earlier, pair))
        if after_seed:
            first = self.seed_pair
            samples.extend(_two_turns(first, p) for p in self.pairs if p is not first)
        return samples

    def answer_to(self, question: str) -> str:
        """The reference answer to ``question``."""
        return next(p.answer for p in self.pairs if p.question == question)


def load_dialogues(path: Path | None = None) -> Dialogues:
    """Read a dialogue set (by default the one bundled with kubechat) and check it."""
    if path is None:
        text = resources.files(__package__).joinpath(DIALOGUES_FILE).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text)
    pairs = tuple(QAPair(p["question"], p["answer"]) for p in data["pairs"])
    questions = [p.question for p in pairs]
    if len(set(questions)) != len(questions):
        raise ValueError("dialogue set has a repeated question")
    if data["seed_question"] not in questions:
        raise ValueError("the seed question is not among the dialogue pairs")
    return Dialogues(pairs=pairs, seed_question=data["seed_question"])


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _two_turns(earlier: QAPair, pair: QAPair) -> list[dict[str, str]]:
    return [_user(earlier.question), _assistant(earlier.answer), _user(pair.question)]
