"""Generate `tiny_corpus.txt`: a small, deterministic, English-like text for the example specs.

The project ships no third-party text. This script writes play-like dialogue from a tiny
hand-written grammar (every word below is ordinary English, so the output is free of any
copyright), with enough regularity for bigram and BPE statistics to be interesting and enough
variety that a small transformer does not memorise it at once.

    python specs/data/make_tiny_corpus.py            # rewrites specs/data/tiny_corpus.txt
"""

from __future__ import annotations

import random
from pathlib import Path

TARGET_BYTES = 200_000
SEED = 1

NAMES = ["ANNA", "BERTRAM", "CELIA", "DORIAN", "EDMUND", "FLORA", "GREGORY", "HELENA", "IVO", "JULIET"]
NOUNS = [
    "king", "queen", "river", "castle", "garden", "letter", "sword", "crown", "horse", "storm",
    "friend", "father", "mother", "brother", "sister", "night", "morning", "village", "ship", "sea",
    "forest", "road", "fire", "bell", "window", "door", "table", "candle", "song", "word",
]
ADJS = [
    "old", "young", "bright", "dark", "quiet", "gentle", "cold", "golden", "broken", "noble",
    "strange", "little", "great", "honest", "weary", "proud", "sweet", "bitter", "distant", "open",
]
VERBS_T = ["sees", "keeps", "loves", "fears", "finds", "takes", "hears", "follows", "remembers", "carries"]
VERBS_I = ["sleeps", "waits", "sings", "weeps", "laughs", "listens", "wanders", "returns", "rests", "speaks"]
ADVS = ["softly", "slowly", "at last", "again", "tonight", "in silence", "with care", "alone", "once more", "by the sea"]
PREPS = ["near", "beyond", "under", "beside", "across", "within", "before", "behind"]
OPENERS = ["Alas", "Good sir", "Hark", "My lord", "Indeed", "Come", "Nay", "Yes", "Well", "Listen"]


def noun_phrase(r: random.Random) -> str:
    np_ = f"the {r.choice(NOUNS)}"
    if r.random() < 0.5:
        np_ = f"the {r.choice(ADJS)} {r.choice(NOUNS)}"
    if r.random() < 0.2:
        np_ += f" {r.choice(PREPS)} the {r.choice(NOUNS)}"
    return np_


def clause(r: random.Random) -> str:
    subject = noun_phrase(r) if r.random() < 0.7 else r.choice(["he", "she", "it", "my heart", "our house"])
    if r.random() < 0.55:
        out = f"{subject} {r.choice(VERBS_T)} {noun_phrase(r)}"
    else:
        out = f"{subject} {r.choice(VERBS_I)}"
    if r.random() < 0.4:
        out += f" {r.choice(ADVS)}"
    return out


def sentence(r: random.Random) -> str:
    s = clause(r)
    while r.random() < 0.3:
        s += f", {r.choice(['and', 'but', 'for', 'while'])} {clause(r)}"
    if r.random() < 0.3:
        s = f"{r.choice(OPENERS)}, {s}"
    end = r.choice([".", ".", ".", "!", "?"])
    return s[0].upper() + s[1:] + end


def generate(target_bytes: int = TARGET_BYTES, seed: int = SEED) -> str:
    r = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < target_bytes:
        speech = " ".join(sentence(r) for _ in range(r.randint(1, 4)))
        block = f"{r.choice(NAMES)}:\n{speech}\n\n"
        parts.append(block)
        size += len(block)
    return "".join(parts)


if __name__ == "__main__":
    out = Path(__file__).with_name("tiny_corpus.txt")
    out.write_text(generate())
