"""Realistic live-chat text: human-written sentences mixed with short repeated chat memes.

A benchmark or a synthetic stream whose comments are ten fixed strings flatters the comment encoder
(it encodes each distinct text once) and lets a model key on exact strings. :class:`ChatText` draws
lines whose mix looks like a real room: most lines are distinct sentences, a minority are the short
memes every room repeats ("lol", "666", "W", emotes).

Sentence source, chosen once per instance (see :meth:`ChatText.describe`):

* ``qvhighlights`` — the 1,550 distinct human-written queries of QVHighlights val
  (``qvhighlights/highlight_val_release.jsonl`` under ``MM_LIVE_REAL_DATA``), read at run time;
  nothing of them is shipped in this repository;
* ``compositional`` — without that file, a deterministic template × vocabulary generator of varied
  sentences (about 10^5 distinct ones).

Three kinds of line:

* ``chat`` — ordinary talk: a sentence, sometimes with a chatty prefix/suffix; ~20% chat memes;
* ``hype`` — a reaction to something that just happened: an exclamation around a sentence
  ("no way, a man jumps off the cliff!!") or a hype meme ("666", "clip it", "🔥🔥🔥"); ~40% memes;
* ``spam`` — promotion or flood unrelated to the stream ("free skins at ...", "follow @x for ..."),
  drawn from templates with varying names, codes and numbers; ~15% exact-copy floods.

Sentences are dealt from a shuffled deck without replacement; when the deck is spent it is dealt
again with a different decoration per pass, so even a busy chat (30 lines/s for 10 minutes) stays
mostly distinct. Everything is deterministic given ``seed`` and the sequence of calls.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mm_live.errors import DataError

KINDS = ("chat", "hype", "spam")
QVHL_FILE = Path("qvhighlights") / "highlight_val_release.jsonl"

CHAT_MEMES = (
    "lol", "lmao", "hi", "hello", "hey chat", "hmm", "ok", "haha", "xD", "o7", "👋", "😂", "🙂", "?", "...",
    "same", "true", "fr", "first", "brb", "back", "gn chat", "KEKW", "LUL",
)
HYPE_MEMES = (
    "666", "6666666", "W", "WWW", "gg", "GG", "POG", "pog", "🔥🔥🔥", "😱😱", "OMG", "no way", "clip it!",
    "LETS GOOO", "insane!!", "wow!!", "WOW", "unreal", "what a play", "👏👏👏", "HOLY", "!!!!", "Pog", "EZ Clap",
)
SPAM_FLOODS = (
    "FREE SKINS FREE SKINS FREE SKINS", "follow4follow follow4follow", "💰💰💰 cheap coins 💰💰💰",
    "check my profile!!!", "sub to my channel pls", "AAAAAAAAAAAAAAAAAAAA",
)
_CHAT_PREFIX = ("", "", "", "btw ", "lol ", "ok so ", "wait, ", "honestly ", "hmm ", "i think ", "chat, ", "yo ")
_CHAT_SUFFIX = ("", "", "", " haha", " lol", " :)", "?", " right?", " 😂", " tbh", " xD", "...")
_HYPE_PREFIX = ("no way, ", "OMG ", "did you see that?! ", "WHAT ", "holy, ", "yooo ", "clip it: ", "wow ",
                "unreal, ", "LETS GO ", "insane ", "omg omg ")
_HYPE_SUFFIX = ("!!", "!!!", " 😱", " 🔥🔥", "!! 666", " WWW", "?!", " no way!!", " 👏👏", "!!! clip it")

_SPAM_TEMPLATES = (
    "free {item} at {site} use code {code}",
    "cheap {item} only {price} at {site}",
    "follow @{handle} for free {item}!!",
    "{handle} is giving away {n} {item}, link in bio",
    "want {n} followers? visit {site}",
    "best {item} deals {price}, dm @{handle}",
    "earn {price} a day from home, {site}",
    "{site} {item} {code} {code} {code}",
)
_SPAM_ITEMS = ("skins", "coins", "followers", "gift cards", "diamonds", "phones", "crypto", "vouchers", "likes", "views")
_SPAM_SITES = ("freeskinz.top", "coinzz.shop", "getfans.live", "bestdeal.cc", "luckybox.win", "gift4u.click")
_SPAM_HANDLES = ("promo_king", "deals4u", "xx_giveaway_xx", "fanboost", "richquick", "cheapgems88")

# Fallback sentence generator: subject × verb phrase × place (× time) ≈ 40·40·30·8 distinct sentences.
_SUBJECTS = (
    "the streamer", "a man in a red jacket", "my little brother", "the guy on the left", "a woman with a dog",
    "the chef", "two kids", "the goalkeeper", "an old man", "the girl in the hat", "the cat", "the driver",
    "a tourist", "the band", "my friend", "the teacher", "a cyclist", "the host", "the baby", "the team",
    "a couple", "the crowd", "the dancer", "a fisherman", "the singer", "the camera guy", "a boy", "grandma",
    "the player", "the guest", "a street vendor", "the coach", "a puppy", "the pilot", "a student", "the mechanic",
    "a runner", "the painter", "my neighbour", "the referee",
)
_VERBS = (
    "is cooking noodles", "walks along", "is talking about a trip", "plays the guitar", "is fixing a bike",
    "shows a new phone", "eats dumplings", "is reading the comments", "sets up the camera", "tries a new recipe",
    "is cleaning up", "explains the rules", "is looking for the keys", "waves at the camera", "drinks tea",
    "opens a package", "is painting a wall", "feeds the ducks", "sings a quiet song", "checks the map",
    "is stretching", "ties his shoes", "talks to a friend", "is laughing", "puts on makeup", "is driving slowly",
    "buys some fruit", "sits down", "is drawing a picture", "takes a photo", "is waiting for the bus",
    "counts the money", "reads a book", "is washing dishes", "walks the dog", "is typing something",
    "looks out the window", "is practising", "builds a small table", "is planning the next game",
)
_PLACES = (
    "in the kitchen", "at the beach", "in a small shop", "on the street", "in the park", "at home",
    "in the car", "on a boat", "in the office", "at the market", "near the lake", "on the roof", "in a cafe",
    "at the station", "in the garden", "on stage", "in the gym", "at a friend's place", "in the mountains",
    "by the river", "in the hotel", "at school", "in the studio", "on the balcony", "in the rain",
    "at night", "in the snow", "on the bridge", "in the living room", "outside",
)
_TIMES = ("", "", "", " again", " right now", " this morning", " for the first time", " like every day")


def default_root() -> Path | None:
    """``MM_LIVE_REAL_DATA`` when set (the shared real-data folder), else None."""
    env = os.environ.get("MM_LIVE_REAL_DATA")
    return Path(env) if env else None


@functools.lru_cache(maxsize=4)
def _read_queries(path: str) -> tuple[str, ...]:
    """Distinct QVHighlights query sentences of ``path``, in file order (read once per process)."""
    seen: dict[str, None] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                q = str(json.loads(line).get("query", "")).strip()
                if q:
                    seen.setdefault(q, None)
    return tuple(seen)


@functools.lru_cache(maxsize=2)
def _compositional(n: int) -> tuple[str, ...]:
    """``n`` distinct template sentences (subject, verb phrase, place, time), a fixed draw."""
    rng = np.random.default_rng(12_345)
    sizes = (len(_SUBJECTS), len(_VERBS), len(_PLACES), len(_TIMES))
    total = int(np.prod(sizes))
    codes = rng.choice(total, size=min(n, total), replace=False)
    out = []
    for c in codes.tolist():
        c, t = divmod(c, sizes[3])
        c, p = divmod(c, sizes[2])
        s, v = divmod(c, sizes[1])
        out.append(f"{_SUBJECTS[s].capitalize()} {_VERBS[v]} {_PLACES[p]}{_TIMES[t]}.")
    return tuple(out)


def distinct_share(lines: Sequence[str]) -> float:
    """Number of distinct strings / number of lines (1.0 for an empty list)."""
    return len(set(lines)) / len(lines) if len(lines) else 1.0


class ChatText:
    """Deterministic source of chat lines of three kinds (``chat``, ``hype``, ``spam``).

    ``source``: None = the QVHighlights queries under ``MM_LIVE_REAL_DATA`` when present, else the
    compositional generator; ``"compositional"`` forces the generator; a path names the QVHighlights
    jsonl file or a folder holding ``qvhighlights/highlight_val_release.jsonl`` (it must exist).
    """

    # share of meme lines per kind (the rest are sentences / templated spam)
    MEME_SHARE = {"chat": 0.2, "hype": 0.4, "spam": 0.15}

    def __init__(self, seed: int = 0, source: str | Path | None = None):
        self.rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7_117,)))
        self.path = self._resolve(source)
        if self.path is not None:
            self.source = "qvhighlights"
            self.sentences = list(_read_queries(str(self.path)))
        else:
            self.source = "compositional"
            self.sentences = list(_compositional(20_000))
        self._deck: np.ndarray = np.zeros(0, dtype=np.int64)
        self._pass = -1
        self.drawn: list[str] = []  # every line handed out, for describe()

    @staticmethod
    def _resolve(source: str | Path | None) -> Path | None:
        if source == "compositional":
            return None
        explicit = source is not None
        root = Path(source) if explicit else default_root()
        if root is None:
            return None
        path = root if root.is_file() else root / QVHL_FILE
        if path.is_file():
            return path
        if explicit:
            raise DataError(f"chat text: {path} not found; pass the QVHighlights val jsonl, its data folder, or 'compositional'")
        return None

    # ------------------------------------------------------------------ drawing

    def _sentence(self) -> tuple[str, int]:
        """Next sentence off the deck and the deck pass it came from (0 = first pass)."""
        if len(self._deck) == 0:
            self._deck = self.rng.permutation(len(self.sentences))
            self._pass += 1
        i, self._deck = int(self._deck[0]), self._deck[1:]
        return self.sentences[i], self._pass

    def _pick(self, options: Sequence[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def _chat(self) -> str:
        s, p = self._sentence()
        pre, suf = self._pick(_CHAT_PREFIX), self._pick(_CHAT_SUFFIX)
        if p > 0 and not pre and not suf:  # a repeated sentence comes back reworded
            pre, suf = _CHAT_PREFIX[3 + p % 9], _CHAT_SUFFIX[3 + (p // 9) % 9]
        if suf:
            s = s.rstrip(".!")
        return pre + (s[0].lower() + s[1:] if pre else s) + suf

    def _hype(self) -> str:
        s, p = self._sentence()
        pre = _HYPE_PREFIX[(int(self.rng.integers(len(_HYPE_PREFIX))) + p) % len(_HYPE_PREFIX)]
        body = s.rstrip(".!?")
        return pre + body[0].lower() + body[1:] + self._pick(_HYPE_SUFFIX)

    def _spam(self) -> str:
        r = self.rng
        code = "".join(chr(65 + int(c)) for c in r.integers(0, 26, size=3)) + str(int(r.integers(10, 100)))
        return self._pick(_SPAM_TEMPLATES).format(
            item=self._pick(_SPAM_ITEMS), site=self._pick(_SPAM_SITES), handle=self._pick(_SPAM_HANDLES),
            code=code, price=f"${int(r.integers(1, 100))}", n=int(r.integers(2, 50)) * 100)

    def line(self, kind: str = "chat") -> str:
        """One line of ``kind`` (``chat``, ``hype`` or ``spam``)."""
        if kind not in KINDS:
            raise DataError(f"chat text: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        memes = {"chat": CHAT_MEMES, "hype": HYPE_MEMES, "spam": SPAM_FLOODS}[kind]
        if self.rng.random() < self.MEME_SHARE[kind]:
            out = self._pick(memes)
        else:
            out = {"chat": self._chat, "hype": self._hype, "spam": self._spam}[kind]()
        self.drawn.append(out)
        return out

    def lines(self, n: int, kind: str = "chat") -> list[str]:
        """``n`` lines of ``kind``."""
        return [self.line(kind) for _ in range(int(n))]

    def source_text(self) -> str:
        """Where the sentences come from, in words."""
        if self.source == "qvhighlights":
            return f"QVHighlights queries ({len(self.sentences)} distinct, {self.path}) + chat memes"
        return (f"compositional template sentences ({len(self.sentences)}; MM_LIVE_REAL_DATA not set or no "
                "QVHighlights file) + chat memes")

    def describe(self) -> str:
        """Which sentence source is used and the distinct share of the lines drawn so far."""
        return f"chat text: {self.source_text()}; {len(self.drawn)} lines drawn, {distinct_share(self.drawn):.0%} distinct"
