"""The blocklist after normalization: the spellings people and models use to dodge word matching are caught,
and names and places that merely contain a blocked word are not."""

from __future__ import annotations

import pytest

from bot.safety.blocklist import Blocklist
from bot.safety.normalize import fold, views

ADMIN_LIST = [
    "fuck*", "shit", "shithead", "cunt", "penis", "sex", "ass", "asshole", "bitch", "dick", "idiot",
    "kill yourself", "cock", "twat", "tit", "whore", "retard", "moron", "dumbass", "fck", "stfu", "kys",
]  # fmt: skip
BLOCKLIST = Blocklist(ADMIN_LIST)


@pytest.mark.parametrize(
    "text",
    [
        "FUCK YOU",
        "you're a f*cking idiot",
        "f**k off",
        "fuuuuuck you",
        "f u c k you",
        "f.u.c.k off",
        "Fück yöu",  # accents
        "fu\u0441k you",  # Cyrillic с
        "you \u0456d\u0456ot",  # Cyrillic і
        "\u0443\u043eu \u0430r\u0435 \u0430 \u0440i\u0435c\u0435 \u043ef \u0455hit",  # Cyrillic look-alikes
        "f\u200buck you",  # zero-width space
        "sh\u200dit for brains",  # zero-width joiner
        "fu\u00adck off",  # soft hyphen
        "f\u200cu\u200cc\u200ck you",  # zero-width non-joiners between every letter
        "\uff46\uff55\uff43\uff4b you",  # full-width
        "\U0001d41f\U0001d42e\U0001d41c\U0001d424 you",  # mathematical bold
        "go to hell, you \u1e0f\u00eeck",  # combining marks
        "this is sh1t",
        "you're a b1tch",
        "b!tch please",
        "you're an a$$hole",
        "you @sshole",
        "st00pid m0r0n",
        "k1ll y0urs3lf",
        "wh0re",
        "sh!thead",
        "you c*nt",
        "you're a r3tard",
        "biiiiitch",
        "you're a dumbasssss",
        "s.t.u.p.i.d b.i.t.c.h",
        "FuCk OfF yOu MoRoN",
        "stfu",
    ],
)
def test_obfuscated_words_are_caught(text):
    assert BLOCKLIST.match(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "I'm going to Scunthorpe next week.",
        "We stopped in Penistone on the way to Sheffield.",
        "I grew up in Essex.",
        "My aunt lives in Middlesex, near Sussex.",
        "Have you been to Cockermouth?",
        "Shitterton is a real village in Dorset.",
        "Twatt is a tiny place in Orkney.",
        "Have you read anything by Charles Dickens?",
        "Our teacher Mrs Cockburn is really nice.",
        "Matt Hancock was on the news again.",
        "Emily Dickinson wrote beautiful poems.",
        "We need to assess the situation before class.",
        "I passed my assessment!",
        "She's the assistant manager.",
        "I ordered a cocktail at the bar.",
        "My therapist says I'm doing well.",
        "The bass guitar shop is closed.",
        "The Sexton family lives next door.",
        "I have 3 cats and 2 dogs.",
        "Hi! How are you?",
        "I was 1st in the 90s, at 5:30.",
        "Titanic was better than Titus Andronicus.",
    ],
)
def test_names_and_places_containing_a_blocked_word_pass(text):
    assert BLOCKLIST.match(text) is None


def test_stems_phrases_and_patterns():
    blocklist = Blocklist(["fuck*", "*hole", "kill yourself", "re:\\bn[o0]pe{3,}\\b"])
    assert blocklist.match("what a fucking mess") == "fuck*"
    assert blocklist.match("you arsehole") == "*hole"
    assert blocklist.match("just kill   yourself") == "kill yourself"
    assert blocklist.match("nopeeee") == "re:\\bn[o0]pe{3,}\\b"
    assert blocklist.match("nope, I kill time with yourself-help books") is None


def test_an_empty_blocklist_matches_nothing():
    assert Blocklist([]).match("fuck") is None
    assert len(Blocklist(["", "  "])) == 0


def test_folding_and_views():
    assert fold("ＦÜСК\u200b") == "fuck"  # full-width, accent, Cyrillic С and К, zero-width space
    assert views("Hello there") == ["Hello there"]
    assert views("I have 3 cats") == ["I have 3 cats"]  # digits outside words stay digits
    assert "shit" in views("sh1t")
    assert "fuck you" in views("f u c k you")
    assert "fuck" in views("fuuuuck")
