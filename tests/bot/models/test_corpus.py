"""Training conversations: chitchat-dataset's turns, exported history, and the held-out split."""

import json

import pytest

from bot.errors import DialobotError
from bot.models.corpus import (
    Conversation,
    join_messages,
    load_chitchat,
    load_history_export,
    merge_turns,
    split_at_least_one,
    split_conversations,
)


@pytest.fixture(scope="module")
def chitchat():
    return load_chitchat()


def test_messages_in_a_row_by_one_sender_are_one_turn():
    turns, authors, learn = merge_turns([("a", "hi"), ("a", "how are you?"), ("b", "good"), ("a", "  ")])
    assert turns == ("hi. how are you?", "good")
    assert authors == ("a", "b")
    assert learn == (True, True)
    assert join_messages(["lol!", "ok", "  so   what  "]) == "lol! ok. so what"


def test_chitchat_turns_alternate_between_two_people(chitchat):
    assert 3500 < len(chitchat) < 7168  # conversations whose messages all carry one sender are left out
    assert sum(len(c.turns) for c in chitchat) > 120_000
    for conversation in chitchat[:200]:
        assert len(set(conversation.authors)) == 2
        assert all(a != b for a, b in zip(conversation.authors, conversation.authors[1:], strict=False))
        assert all(turn and turn == " ".join(turn.split()) for turn in conversation.turns)


def test_heldout_slice_is_disjoint_stable_and_about_five_percent(chitchat):
    train, heldout = split_conversations(chitchat, "train"), split_conversations(chitchat, "heldout")
    assert len(train) + len(heldout) == len(chitchat)
    assert 0.03 < len(heldout) / len(chitchat) < 0.07
    assert not {c.key for c in train} & {c.key for c in heldout}
    assert [c.key for c in split_conversations(load_chitchat(), "heldout")] == [c.key for c in heldout]


def test_a_file_in_the_chitchat_format_loads(tmp_path):
    data = {
        "c1": {
            "messages": [
                [{"text": "hey", "sender": "x", "timestamp": ""}],
                [{"text": "hi", "sender": "y", "timestamp": ""}, {"text": "sup", "sender": "y"}],
            ]
        }
    }
    path = tmp_path / "chats.json"
    path.write_text(json.dumps(data))
    assert load_chitchat(path) == [Conversation("c1", ("hey", "hi. sup"), ("x", "y"))]
    path.write_text(json.dumps({"c1": {"nope": []}}))
    with pytest.raises(DialobotError, match="not in the chitchat format"):
        load_chitchat(path)


def export_line(channel, role, author, text, minute):
    return json.dumps(
        {
            "channel": channel,
            "role": role,
            "author_id": author,
            "text": text,
            "created_at": f"2026-01-01T10:{minute:02d}:00+00:00",
        }
    )


def test_history_export_splits_at_silences_and_does_not_learn_the_bot(tmp_path):
    lines = [
        export_line("discord:1:2", "user", "u1", "hello there", 0),
        export_line("discord:1:2", "bot", None, "hi!", 1),
        export_line("discord:1:2", "user", "u1", "how are you", 2),
        export_line("discord:1:2", "user", "u2", "me too", 3),
        # 40 minutes later: a new conversation
        export_line("discord:1:2", "user", "u2", "anyone here?", 43),
        export_line("discord:1:2", "user", "u2", "hello?", 44),
        export_line("discord:1:2", "bot", None, "yes", 45),
    ]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")
    first, second = load_history_export([path])
    assert first.turns == ("hello there", "hi!", "how are you", "me too")
    assert first.authors == ("user:u1", "bot", "user:u1", "user:u2")
    assert first.learn == (True, False, True, True)
    assert second.turns == ("anyone here? hello?", "yes")
    assert second.learn == (True, False)
    assert first.key != second.key


def test_a_broken_export_line_is_named(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text(export_line("c", "user", "u", "hi", 0) + "\n{not json\n")
    with pytest.raises(DialobotError, match=r"export.jsonl:2: not a history export line"):
        load_history_export([path])


def test_a_small_collection_always_holds_one_conversation_out():
    conversations = [Conversation(f"k{i}", ("a", "b"), ("x", "y")) for i in range(3)]
    train, heldout = split_at_least_one(conversations)
    assert len(heldout) == 1 and len(train) == 2
    assert split_at_least_one(conversations) == (train, heldout)
    assert split_at_least_one(conversations[:1]) == (conversations[:1], [])
