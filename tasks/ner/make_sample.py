"""Make the small NER sample shipped in sample/ (synthetic newswire-like sentences, seeded).

Sentences come from templates with slots for persons (PER), locations (LOC), organisations (ORG) and
nationalities / events (MISC). Names are made up from syllables and a gazetteer-like list of name
parts; part of every gazetteer is kept out of training, so dev and test hold names never seen in
training and a tagger has to use context and spelling (capitals, suffixes like "Corp"), not memory.

Output: CoNLL-style column files `word TAG` (space separated), IOB2 tags, blank line between
sentences and a `-DOCSTART- O` line every 20 sentences.
Run: python tasks/ner/make_sample.py  (rewrites sample/*.conll identically)
"""
from __future__ import annotations

import random
from pathlib import Path

FIRST = ["Anna", "Boris", "Carla", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Lars",
         "Maya", "Nils", "Olga", "Pavel", "Rosa", "Stefan", "Tara", "Umberto", "Vera", "Walter", "Yusuf", "Zoe",
         "Amir", "Bianca", "Cyril", "Dora", "Emil", "Freya"]
SYLLABLES = ["ber", "tol", "man", "kov", "sen", "dal", "rin", "vik", "ska", "mor", "len", "gar", "hol", "ton",
             "vis", "nar", "del", "por", "zun", "mel"]
PLACE_HEADS = ["Port", "New", "San", "Lake", "North", "East", "Mount", "Fort"]
ORG_SUFFIX = ["Corp", "Group", "Bank", "Airlines", "Holdings", "Motors", "United", "Telecom", "Institute", "Party"]
MISC = ["German", "French", "Brazilian", "Korean", "Dutch", "Italian", "Kenyan", "Polish", "Chilean", "Swedish",
        "Olympic", "European", "Asian", "Nordic", "Arab"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

TEMPLATES = [
    "{PER} visited {LOC} on {DAY} .",
    "{ORG} said on {DAY} it would open an office in {LOC} .",
    "{PER} , a spokesman for {ORG} , declined to comment .",
    "the {MISC} delegation met {PER} in {LOC} .",
    "shares of {ORG} rose {NUM} percent in {LOC} trading .",
    "{PER} and {PER} arrived in {LOC} on {DATE} .",
    "{LOC} beat {LOC} {SCORE} in the final .",
    "{PER} joined {ORG} in {YEAR} .",
    "{ORG} chairman {PER} told reporters in {LOC} that profits fell .",
    "police in {LOC} arrested {NUM} people after the match .",
    "the {MISC} team won the {MISC} Cup for the first time .",
    "{PER} ( {LOC} ) {SCORE}",
    "{ORG} will buy {ORG} for {NUM} million dollars , the companies said .",
    "talks between {ORG} and the {MISC} government ended in {LOC} .",
    "{PER} said the {MISC} market was weak .",
    "prices in {LOC} were steady on {DAY} .",
]


def make_name(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def gazetteers(rng: random.Random) -> dict[str, list[list[str]]]:
    surnames = sorted({make_name(rng, rng.choice([2, 3])) for _ in range(120)})
    persons = [[rng.choice(FIRST), s] if rng.random() < 0.7 else [s] for s in surnames]
    places = sorted({make_name(rng, 2) for _ in range(80)})
    locations = [[rng.choice(PLACE_HEADS), p] if rng.random() < 0.3 else [p] for p in places]
    orgs = sorted({make_name(rng, 2) for _ in range(80)})
    organisations = [[o, rng.choice(ORG_SUFFIX)] if rng.random() < 0.8 else [o.upper()[:3]] for o in orgs]
    return {"PER": persons, "LOC": locations, "ORG": organisations, "MISC": [[m] for m in MISC]}


def split_gazetteers(gaz: dict, rng: random.Random) -> tuple[dict, dict]:
    """80% of each list for training; the other 20% appear only in dev and test (with the rest)."""
    train, held = {}, {}
    for key, names in gaz.items():
        names = names[:]
        rng.shuffle(names)
        cut = int(len(names) * 0.8) if key != "MISC" else len(names)
        train[key], held[key] = names[:cut], names
    return train, held


def sentence(rng: random.Random, gaz: dict) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for slot in rng.choice(TEMPLATES).split():
        if slot.startswith("{") and slot.endswith("}"):
            kind = slot[1:-1]
            if kind in gaz:
                words = rng.choice(gaz[kind])
                out += [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]
            elif kind == "DAY":
                out.append((rng.choice(DAYS), "O"))
            elif kind == "NUM":
                out.append((str(rng.choice([2, 3, 5, 12, 40, 150])) if rng.random() < 0.7
                            else f"{rng.randint(1, 9)}.{rng.randint(0, 9)}", "O"))
            elif kind == "SCORE":
                out.append((f"{rng.randint(0, 4)}-{rng.randint(0, 4)}", "O"))
            elif kind == "YEAR":
                out.append((str(rng.randint(1980, 2026)), "O"))
            elif kind == "DATE":
                out.append((f"{rng.randint(1990, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", "O"))
        else:
            out.append((slot, "O"))
    if out and out[0][1] == "O":  # sentence case
        out[0] = (out[0][0][:1].upper() + out[0][0][1:], "O")
    return out


def write(path: Path, sentences: list[list[tuple[str, str]]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, sent in enumerate(sentences):
            if i % 20 == 0:
                f.write("-DOCSTART- O\n\n")
            for word, tag in sent:
                f.write(f"{word} {tag}\n")
            f.write("\n")


def main() -> None:
    rng = random.Random(2026)
    train_gaz, all_gaz = split_gazetteers(gazetteers(rng), rng)
    out = Path(__file__).parent / "sample"
    out.mkdir(exist_ok=True)
    write(out / "train.conll", [sentence(rng, train_gaz) for _ in range(600)])
    for split in ("dev", "test"):
        write(out / f"{split}.conll", [sentence(rng, all_gaz) for _ in range(150)])


if __name__ == "__main__":
    main()
