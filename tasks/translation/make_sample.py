"""Make the small parallel sample shipped in sample/: a synthetic "German-English" pair, seeded.

Not real translation data. English-like sentences come from a tiny grammar
(subject - verb - object - optional place phrase, sometimes a second clause with "and"); the source
side maps every word through a fixed dictionary and moves each clause's verb to its end (a
German-like verb-final order), so word-by-word copying is not enough: the model has to reorder.
Nouns are capitalised on the source side, as in German, and a few source words have umlauts.

Run: python tasks/translation/make_sample.py  (rewrites sample/{train,dev,test}.{de,en} identically)
"""
from __future__ import annotations

import random
from pathlib import Path

NOUNS = {"man": "Mann", "woman": "Frau", "girl": "Mädchen", "boy": "Junge", "dog": "Hund", "cat": "Katze",
         "child": "Kind", "bike": "Fahrrad", "ball": "Ball", "car": "Auto", "horse": "Pferd", "bird": "Vogel",
         "hat": "Hut", "street": "Straße", "park": "Park", "beach": "Strand", "house": "Haus", "tree": "Baum",
         "river": "Fluss", "table": "Tisch", "guitar": "Gitarre", "book": "Buch", "camera": "Kamera",
         "boat": "Boot", "bridge": "Brücke", "market": "Markt", "kitchen": "Küche", "garden": "Garten"}
ADJECTIVES = {"red": "rote", "big": "große", "small": "kleine", "old": "alte", "young": "junge",
              "green": "grüne", "white": "weiße", "black": "schwarze", "happy": "fröhliche", "blue": "blaue",
              "tall": "hohe", "wet": "nasse"}
VERBS = {"sees": "sieht", "rides": "fährt", "holds": "hält", "carries": "trägt", "watches": "beobachtet",
         "follows": "folgt", "pushes": "schiebt", "paints": "malt", "finds": "findet", "throws": "wirft",
         "cleans": "putzt", "buys": "kauft"}
PREPOSITIONS = {"in": "in", "on": "auf", "near": "neben", "behind": "hinter", "under": "unter", "at": "an"}
DETERMINERS = {"a": "ein", "the": "der", "two": "zwei"}
OTHER = {"and": "und"}
PLACES = ["street", "park", "beach", "house", "tree", "river", "table", "bridge", "market", "kitchen", "garden"]
LEXICON = {**NOUNS, **ADJECTIVES, **VERBS, **PREPOSITIONS, **DETERMINERS, **OTHER}


def noun_phrase(rng: random.Random, nouns: list[str]) -> list[str]:
    words = [rng.choice(["a", "the", "the", "two"] if len(nouns) > 10 else ["a", "the"])]
    if rng.random() < 0.4:
        words.append(rng.choice(list(ADJECTIVES)))
    return words + [rng.choice(nouns)]


def clause(rng: random.Random) -> tuple[list[str], int]:
    """English words of one clause and the position of its verb."""
    subject = noun_phrase(rng, list(NOUNS))
    words = subject + [rng.choice(list(VERBS))] + noun_phrase(rng, list(NOUNS))
    if rng.random() < 0.5:
        words += [rng.choice(list(PREPOSITIONS))] + noun_phrase(rng, PLACES)
    return words, len(subject)


def to_source(words: list[str], verb_at: int) -> list[str]:
    """Word-by-word through the dictionary, verb moved to the end of the clause."""
    reordered = words[:verb_at] + words[verb_at + 1:] + [words[verb_at]]
    return [LEXICON[w] for w in reordered]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def make_pair(rng: random.Random) -> tuple[str, str]:
    en, de = [], []
    for k in range(2 if rng.random() < 0.2 else 1):
        words, verb_at = clause(rng)
        if k:
            en.append("and")
            de.append("und")
        en += words
        de += to_source(words, verb_at)
    return _cap(" ".join(de) + "."), _cap(" ".join(en) + ".")


def main() -> None:
    rng = random.Random(2026)
    out = Path(__file__).parent / "sample"
    out.mkdir(exist_ok=True)
    seen: set[str] = set()
    for split, n in (("train", 3000), ("dev", 200), ("test", 200)):
        pairs = []
        while len(pairs) < n:  # no sentence in two splits (or twice in one)
            de, en = make_pair(rng)
            if de not in seen:
                seen.add(de)
                pairs.append((de, en))
        for lang, col in (("de", 0), ("en", 1)):
            with open(out / f"{split}.{lang}", "w", encoding="utf-8", newline="\n") as f:
                f.writelines(p[col] + "\n" for p in pairs)
    print(f"wrote {out}/{{train,dev,test}}.{{de,en}}")


if __name__ == "__main__":
    main()
