"""The statistical half of triage: a linear model over character n-grams. Pure scoring.

Trained by ``python -m services.triage train`` (train.py, scikit-learn's TF-IDF and
multinomial logistic regression) and shipped as ``model/triage_model.npz``: the
vocabulary, its idf and the weights, loaded with ``allow_pickle=False`` so a model file
never executes code, and scored here with numpy alone, so the service neither imports
scikit-learn nor depends on its pickle format. ``tests/unit/test_triage_model.py``
checks that these scores equal scikit-learn's own.

Features (``analyse``) need no word segmentation: Chinese runs give character unigrams
and bigrams, other words give the word and its character trigrams (which survive a
typo), and neighbouring words give a bigram ("never arrived", "not me"). Text is
normalised first by the rules' normalisation plus a complete traditional to simplified
character table, so both halves read the same text.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

DEFAULT_MODEL_PATH = Path(__file__).with_name("model") / "triage_model.npz"
FORMAT_VERSION = 2  # 2: word bigrams among the features

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[a-z][a-z']*")


def analyse(text: str) -> list[str]:
    """The features of one normalised text (training and scoring share this)."""
    features: list[str] = []
    for run in _CJK_RUN.findall(text):
        features.extend(run)
        features.extend(run[i : i + 2] for i in range(len(run) - 1))
    words = _WORD.findall(text)
    for word in words:
        features.append(f"w:{word}")
        padded = f" {word} "
        features.extend(padded[i : i + 3] for i in range(len(padded) - 2))
    features.extend(f"b:{first} {second}" for first, second in pairwise(words))
    return features


def readable(feature: str) -> str:
    """A feature as a reason shows it: the word or words, without their kind's prefix."""
    return feature.removeprefix("w:").removeprefix("b:")


@dataclass(frozen=True)
class Contribution:
    feature: str
    weight: float  # its share of the winning class's score


@dataclass(frozen=True)
class Prediction:
    probabilities: dict[str, float]  # class -> probability, summing to 1
    category: str  # the most probable class
    top_features: tuple[Contribution, ...]  # what pushed hardest towards `category`

    def probability(self, category: str) -> float:
        return self.probabilities.get(category, 0.0)


class TextModel:
    """TF-IDF (sublinear tf, l2 norm) then a softmax over linear scores."""

    def __init__(
        self,
        classes: tuple[str, ...],
        vocabulary: tuple[str, ...],
        idf: np.ndarray,
        coef: np.ndarray,  # (classes, features)
        intercept: np.ndarray,  # (classes,)
        meta: dict[str, object],
    ) -> None:
        if coef.shape != (len(classes), len(vocabulary)) or idf.shape != (len(vocabulary),):
            raise ValueError("model arrays do not match its classes and vocabulary")
        self.classes = classes
        self.meta = meta
        self._index = {feature: i for i, feature in enumerate(vocabulary)}
        self._vocabulary = vocabulary
        self._idf = idf.astype(np.float64)
        # Features by row: one fancy-index gathers a text's weights for every class. Kept
        # in float32, as the file stores them (half the memory); the rows a text uses are
        # widened to float64 before any arithmetic, so the scores do not change.
        self._weights = np.ascontiguousarray(coef.T, dtype=np.float32)
        self._intercept = intercept.astype(np.float64)

    def predict(self, normalised_text: str, top: int = 3) -> Prediction:
        counts = Counter(self._index[f] for f in analyse(normalised_text) if f in self._index)
        scores = self._intercept.copy()
        contributions = None
        if counts:
            rows = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
            tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
            x = tf * self._idf[rows]
            x /= np.sqrt(x @ x)
            weights = self._weights[rows].astype(np.float64)
            contributions = weights * x[:, None]  # (features, classes)
            scores += contributions.sum(axis=0)
        probabilities = np.exp(scores - scores.max())
        probabilities /= probabilities.sum()
        best = int(probabilities.argmax())
        return Prediction(
            probabilities={c: float(p) for c, p in zip(self.classes, probabilities, strict=True)},
            category=self.classes[best],
            top_features=self._top(rows, contributions, best, top) if counts else (),
        )

    def _top(
        self, rows: np.ndarray, contributions: np.ndarray, best: int, top: int
    ) -> tuple[Contribution, ...]:
        column = contributions[:, best]
        order = np.argsort(-column)[:top]
        return tuple(
            Contribution(self._vocabulary[rows[i]], float(column[i]))
            for i in order
            if column[i] > 0
        )

    # ------------------------------------------------------------ file

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            np.savez_compressed(
                out,
                classes=np.array(self.classes),
                vocabulary=np.array(self._vocabulary),
                idf=self._idf.astype(np.float32),
                coef=self._weights.T.astype(np.float32),
                intercept=self._intercept.astype(np.float32),
                meta=np.array(json.dumps({"format": FORMAT_VERSION, **self.meta})),
            )

    @classmethod
    def load(cls, path: Path = DEFAULT_MODEL_PATH) -> TextModel:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"{path}: model format {meta.get('format')!r} is not supported")
            return cls(
                classes=tuple(str(c) for c in data["classes"]),
                vocabulary=tuple(str(f) for f in data["vocabulary"]),
                idf=data["idf"],
                coef=data["coef"],
                intercept=data["intercept"],
                meta=meta,
            )
