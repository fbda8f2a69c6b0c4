"""Make the small generation sample shipped in sample/ (a synthetic play and styled lines, seeded).

sample/train.txt, sample/valid.txt: a play in the layout of Tiny Shakespeare ("NAME:" on its own line,
one to three lines of speech, a blank line), written by a small grammar. Each character has a
manner of speech a character-level model can learn: the KING commands, the FOOL asks riddles, the
HERALD announces, the QUEEN and LADY ANNE worry, FIRST CITIZEN and SECOND CITIZEN complain.

sample/styles_train.jsonl, sample/styles_valid.jsonl: one line per example with a `style` condition
(question, command, exclamation, statement) that decides the form of the sentence, for lines mode
with conditioning: data.mode=lines data.condition_column=style.

Run: python tasks/generation/make_sample.py  (rewrites sample/* identically)
"""
from __future__ import annotations

import json
import random
from pathlib import Path

PEOPLE = ["lord", "lady", "duke", "bishop", "captain", "soldier", "shepherd", "merchant", "prince", "nurse"]
PLACES = ["tower", "castle", "forest", "harbour", "market", "chapel", "garden", "field", "gate", "river"]
THINGS = ["crown", "sword", "letter", "ring", "horse", "banner", "candle", "bread", "key", "cup"]
GOOD = ["fair", "noble", "gentle", "bright", "true", "sweet", "brave", "kind"]
BAD = ["cold", "dark", "false", "bitter", "weary", "cruel", "heavy", "wild"]
VERBS = ["bring", "fetch", "guard", "seek", "keep", "find", "carry", "mend"]
WEATHER = ["rain", "wind", "snow", "storm", "frost", "mist"]
TIMES = ["tonight", "at dawn", "by noon", "ere morning", "this hour", "tomorrow"]


def a(rng: random.Random, words: list[str]) -> str:
    return rng.choice(words)


def king(rng):
    return rng.choice([
        f"{a(rng, VERBS).capitalize()} me the {a(rng, THINGS)} from the {a(rng, PLACES)}, {a(rng, PEOPLE)}.",
        f"Let the {a(rng, PEOPLE)} {a(rng, VERBS)} the {a(rng, PLACES)} {a(rng, TIMES)}.",
        f"Go, and tell the {a(rng, PEOPLE)} the {a(rng, THINGS)} is mine.",
        f"We will ride to the {a(rng, PLACES)} {a(rng, TIMES)}.",
    ])


def fool(rng):
    return rng.choice([
        f"What is {a(rng, GOOD)} as a {a(rng, THINGS)} and {a(rng, BAD)} as the {a(rng, WEATHER)}?",
        f"Why does the {a(rng, PEOPLE)} {a(rng, VERBS)} a {a(rng, THINGS)} in the {a(rng, WEATHER)}?",
        f"Who keeps the {a(rng, THINGS)} when the {a(rng, PEOPLE)} is {a(rng, BAD)}?",
        f"Nuncle, is a {a(rng, THINGS)} {a(rng, GOOD)} or {a(rng, BAD)}?",
    ])


def herald(rng):
    return rng.choice([
        f"Hear ye! The {a(rng, PEOPLE)} of the {a(rng, PLACES)} comes {a(rng, TIMES)}!",
        f"Make way for the {a(rng, GOOD)} {a(rng, PEOPLE)}!",
        f"News from the {a(rng, PLACES)}: the {a(rng, THINGS)} is found!",
    ])


def worried(rng):
    return rng.choice([
        f"Alas, my {a(rng, PEOPLE)}, the {a(rng, WEATHER)} is {a(rng, BAD)} {a(rng, TIMES)}.",
        f"I fear the {a(rng, THINGS)} is lost in the {a(rng, PLACES)}.",
        f"O {a(rng, GOOD)} {a(rng, PEOPLE)}, where is the {a(rng, THINGS)}?",
        f"My heart is {a(rng, BAD)}, and the {a(rng, PLACES)} is {a(rng, BAD)}.",
    ])


def citizen(rng):
    return rng.choice([
        f"The bread is {a(rng, BAD)} and the {a(rng, WEATHER)} is {a(rng, BAD)}.",
        f"We have no {a(rng, THINGS)}, and the {a(rng, PEOPLE)} has two.",
        f"Let us go to the {a(rng, PLACES)} and ask the {a(rng, PEOPLE)}.",
    ])


SPEAKERS = [("KING", king), ("FOOL", fool), ("HERALD", herald), ("QUEEN", worried), ("LADY ANNE", worried),
            ("FIRST CITIZEN", citizen), ("SECOND CITIZEN", citizen)]


def play(rng: random.Random, n_speeches: int) -> str:
    parts = []
    for _ in range(n_speeches):
        name, speak = rng.choice(SPEAKERS)
        lines = [speak(rng) for _ in range(rng.choice([1, 1, 2, 2, 3]))]
        parts.append(f"{name}:\n" + "\n".join(lines) + "\n\n")
    return "".join(parts)


def styled(rng: random.Random) -> dict:
    style = rng.choice(["question", "command", "exclamation", "statement"])
    person, thing, place = a(rng, PEOPLE), a(rng, THINGS), a(rng, PLACES)
    text = {
        "question": f"where is the {thing} of the {person}?",
        "command": f"{a(rng, VERBS)} the {thing} to the {place}.",
        "exclamation": f"what a {a(rng, GOOD)} {thing}!",
        "statement": f"the {person} is in the {place}.",
    }[style]
    return {"text": text, "style": style}


def main() -> None:
    rng = random.Random(2026)
    out = Path(__file__).parent / "sample"
    out.mkdir(exist_ok=True)
    for split, n in (("train", 480), ("valid", 60)):
        (out / f"{split}.txt").write_text(play(rng, n), encoding="utf-8", newline="\n")
    for split, n in (("styles_train", 1500), ("styles_valid", 200)):
        with open(out / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for _ in range(n):
                f.write(json.dumps(styled(rng)) + "\n")


if __name__ == "__main__":
    main()
