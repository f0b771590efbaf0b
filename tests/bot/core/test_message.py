"""Conversation keys: the platform, then the place from widest to narrowest."""

import pytest

from bot.core.message import conversation_key


def test_keys_join_the_parts_and_leave_out_empty_ones():
    assert conversation_key("discord", 1, 2, 3) == "discord:1:2:3"
    assert conversation_key("discord", 1, 2, None) == "discord:1:2"
    assert conversation_key("slack", "T1", "C1", "") == "slack:T1:C1"
    assert conversation_key("discord", "dm", 42) == "discord:dm:42"
    assert conversation_key("console", "local") == "console:local"


@pytest.mark.parametrize("parts", [(), ("a:b",), ("T", "C:1")])
def test_a_key_without_parts_or_with_a_colon_inside_a_part_is_refused(parts):
    with pytest.raises(ValueError):
        conversation_key("slack", *parts)
