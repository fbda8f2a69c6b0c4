"""Make the small sentiment sample shipped in sample/ (synthetic movie-review sentences, seeded).

The label follows the sentiment words, flipped by a negation ("not", "never") right before them,
so a bag of words alone cannot reach full accuracy but a recurrent model can.
Run: python tasks/sentiment/make_sample.py  (rewrites sample/*.tsv identically)
"""
from __future__ import annotations

import random
from pathlib import Path

POSITIVE = ["good", "great", "gripping", "funny", "moving", "brilliant", "charming", "smart", "fresh",
            "delightful", "powerful", "beautiful", "witty", "tender", "engaging", "superb"]
NEGATIVE = ["bad", "dull", "boring", "clumsy", "tedious", "flat", "stale", "silly", "weak", "messy",
            "awful", "lifeless", "predictable", "shallow", "tiresome", "bland"]
SUBJECTS = ["the film", "this movie", "the story", "the script", "the cast", "the ending", "the director 's work",
            "the plot", "the dialogue", "the soundtrack", "her performance", "his latest picture", "the sequel"]
VERBS = ["is", "was", "feels", "seems", "remains", "turns out"]
ADVERBS = ["", "", "really", "very", "quite", "truly", "rather", "surprisingly"]
NEGATIONS = ["not", "never", "hardly"]
FILLERS = ["", "", "", ", from start to finish", "in the end", ", all things considered", ", to be honest",
           "for most of its running time"]


def phrase(rng: random.Random) -> tuple[str, int]:
    polarity = rng.choice([0, 1])
    word = rng.choice(POSITIVE if polarity else NEGATIVE)
    negated = rng.random() < 0.3
    adverb = rng.choice(ADVERBS)
    words = [rng.choice(VERBS)] + ([rng.choice(NEGATIONS)] if negated else []) + ([adverb] if adverb else []) + [word]
    return " ".join(words), polarity ^ negated


def sentence(rng: random.Random) -> tuple[str, str]:
    clause, label = phrase(rng)
    text = f"{rng.choice(SUBJECTS)} {clause}"
    filler = rng.choice(FILLERS)
    if filler:
        text += (" " if not filler.startswith(",") else " ") + filler
    return text + " .", "positive" if label else "negative"


def main() -> None:
    rng = random.Random(2026)
    out = Path(__file__).parent / "sample"
    out.mkdir(exist_ok=True)
    for split, n in (("train", 2000), ("dev", 300), ("test", 300)):
        rows = [sentence(rng) for _ in range(n)]
        with open(out / f"{split}.tsv", "w", encoding="utf-8", newline="\n") as f:
            f.write("text\tlabel\n")
            for text, label in rows:
                f.write(f"{text}\t{label}\n")


if __name__ == "__main__":
    main()
