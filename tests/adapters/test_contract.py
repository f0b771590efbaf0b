"""The adapter contract: one behavioural suite that every platform adapter passes against its fake platform.

Each case runs for every platform that has the concept it tests (see `Driver.features` in drivers.py); the
others are not parametrized at all rather than skipped:

| case                              | console            | discord | slack |
|-----------------------------------|--------------------|---------|-------|
| addressed answered, others ignored| no unaddressed msg | yes     | yes   |
| DMs answered without a mention    | yes (it is one)    | yes     | yes   |
| threads are their own conversation| no threads         | yes     | yes   |
| long reply split, nothing lost    | yes (no limit)     | 2,000   | 3,000 |
| admin command refused to a member | everyone is admin  | yes     | yes   |
| admin command allowed to an admin | yes                | yes     | yes   |
| duplicate delivery answered once  | no message ids     | yes     | yes   |
| (after the answer, or during it)  |                    |         |       |
| drain with messages in flight     | yes                | yes     | yes   |
| drain out of time: user is told   | yes                | yes     | yes   |

Absence is proven by a later positive event: a second message's reply, after which the first's would have
come. A new platform is added by writing its driver and making this suite pass.
"""

from __future__ import annotations

import pytest

from bot.core.engine import SHUTTING_DOWN
from storage import NewTurn, Role
from tests.adapters.drivers import DRIVERS, STOP_SECONDS, Driver
from tests.waiting import eventually

REFUSAL = "Sorry, only admins can use `reset` here."


def platforms(*needs: str, xfail: dict[str, str] | None = None) -> list:
    """The platforms having every feature in `needs`; `xfail` maps a platform to a known bug's reason."""
    xfail = xfail or {}
    return [
        pytest.param(
            name,
            id=name,
            marks=[pytest.mark.xfail(strict=True, reason=xfail[name])] if name in xfail else [],
        )
        for name, driver in DRIVERS.items()
        if set(needs) <= driver.features
    ]


@pytest.fixture
async def driver(request, store, monkeypatch):
    """The platform's real adapter, created with `create(engine, config)`, running on its fake platform."""
    driver: Driver = DRIVERS[request.param](store, monkeypatch)
    await driver.open()
    try:
        await driver.start()
        yield driver
    finally:
        try:
            if driver.engine is not None:  # shut down as the bot does: drain (writes finish), then stop
                await driver.engine.drain(deadline=STOP_SECONDS)
            await driver.stop()
        finally:
            await driver.close()


async def seed_history(driver: Driver, where: str | None = None) -> None:
    turns = [NewTurn(Role.USER, "someone", "hi"), NewTurn(Role.BOT, "bot", "hello")]
    await driver.store.append_turns(driver.key(where), turns)


async def stored(driver: Driver, count: int, where: str | None = None) -> None:
    """Wait until the conversation holds `count` turns: an exchange is stored just after it was sent."""

    async def holds() -> bool:
        return await driver.store.count_turns(driver.key(where)) == count

    await eventually(holds, what=f"{count} turns stored in {driver.key(where)}")


@pytest.mark.parametrize("driver", platforms("mentions"), indirect=True)
async def test_only_messages_addressed_to_the_bot_are_answered(driver):
    await driver.say("just people talking", addressed=False)
    await driver.say("now you")

    [reply] = await driver.replies()  # the first message would have been answered before this one
    assert reply == "echo: now you (1 turns seen)"
    assert driver.generator.calls == [["now you"]]  # the mention never reaches the model


@pytest.mark.parametrize("driver", platforms(), indirect=True)
async def test_direct_messages_are_answered_without_a_mention(driver):
    await driver.say("hi in private", "dm", addressed=False)

    [reply] = await driver.replies("dm")
    assert reply == "echo: hi in private (1 turns seen)"
    await stored(driver, 2, "dm")


@pytest.mark.parametrize("driver", platforms("threads"), indirect=True)
async def test_a_thread_is_its_own_conversation(driver):
    await driver.say("in the channel")
    await driver.replies("channel", 1)
    await driver.say("in the thread", "thread")
    [first] = await driver.replies("thread", 1)
    await driver.say("again in the thread", "thread")
    [_, second] = await driver.replies("thread", 2)
    await driver.say("back in the channel")
    [_, channel_again] = await driver.replies("channel", 2)

    assert first == "echo: in the thread (1 turns seen)"  # the channel's history is not in the thread's
    assert second == "echo: again in the thread (3 turns seen)"
    assert channel_again == "echo: back in the channel (3 turns seen)"  # nor the thread's in the channel's
    assert driver.key("thread") != driver.key("channel")
    assert driver.key("thread").startswith(driver.key("channel") + ":")  # access lists name both by prefix
    for where in ("channel", "thread"):
        await stored(driver, 4, where)


@pytest.mark.parametrize("driver", platforms(), indirect=True)
async def test_a_long_reply_is_split_at_the_platform_limit_and_nothing_is_lost(driver):
    long_reply = " ".join(f"word{n}" for n in range(2000))  # about 15,800 characters
    driver.generator.replies = [long_reply]
    await driver.say("tell me everything")
    await driver.say("is that all")

    received = await driver.reply_starting("echo: is that all")  # after every piece of the long reply
    pieces, last = received[:-1], received[-1]
    assert last == "echo: is that all (3 turns seen)"
    if driver.limit is None:
        assert pieces == [long_reply]
    else:
        assert len(pieces) >= len(long_reply) // driver.limit
        assert all(len(piece) <= driver.limit for piece in pieces)
        assert " ".join(pieces).split() == long_reply.split()
    stored = await driver.store.recent_turns(driver.key(), 10)
    assert stored[1].text == long_reply  # history keeps the reply whole


@pytest.mark.parametrize("driver", platforms("non_admins"), indirect=True)
async def test_an_admin_command_is_refused_to_a_member(driver):
    await seed_history(driver)
    await driver.say("reset", admin=False)

    [reply] = await driver.replies()
    assert reply == REFUSAL
    assert await driver.store.count_turns(driver.key()) == 2


@pytest.mark.parametrize("driver", platforms(), indirect=True)
async def test_an_admin_command_is_obeyed_for_an_admin(driver):
    await seed_history(driver)
    await driver.say("reset", admin=True)

    [reply] = await driver.replies()
    assert reply.startswith("History cleared (2 turns deleted)")
    assert await driver.store.count_turns(driver.key()) == 0


@pytest.mark.parametrize("driver", platforms("message_ids"), indirect=True)
@pytest.mark.parametrize("again", ["after-the-answer", "while-generating"])
async def test_the_same_message_delivered_twice_is_answered_once(driver, again):
    if again == "while-generating":
        driver.generator.delay = 0.3
    first = await driver.say("hello")
    if again == "after-the-answer":
        await driver.replies()
    else:
        await eventually(lambda: driver.generator.calls, what="the first answer is generating")
    await driver.say("hello", message_id=first.id)  # the platform delivers it again
    await driver.say("something new")

    received = await driver.reply_starting("echo: something new")  # any second answer came before this
    assert received == ["echo: hello (1 turns seen)", "echo: something new (3 turns seen)"]
    await stored(driver, 4)


@pytest.mark.parametrize("driver", platforms(), indirect=True)
async def test_a_drain_answers_every_accepted_message_or_says_it_is_restarting(driver):
    """A stop (drain, then the adapter's `stop`, as on SIGTERM) while one reply is generating and two more
    messages have been taken in: each gets its answer or the restarting notice; none vanishes.

    The two later messages spend a while in the adapter's own first steps (Discord's typing indicator), as a
    burst does right before a stop; platforms that hand a message straight to the engine ignore that."""
    driver.generator.delay = 0.5
    await driver.say("one", "dm")
    await eventually(lambda: driver.generator.calls, what="the first reply is generating")
    driver.first_steps_delay = 3.0  # the adapter's own steps before the engine, where a platform has them
    later = [await driver.say(text, "dm") for text in ("two", "three")]
    for delivery in later:
        await driver.accepted(delivery)

    await driver.engine.drain(deadline=10)
    await driver.stop()

    received = driver.received("dm")
    # A notice may come before an earlier message's answer: it does not wait for the conversation's turn.
    answers = {
        text: [r for r in received if r.startswith(f"echo: {text} (")] for text in ("one", "two", "three")
    }
    assert len(answers["one"]) == 1, received
    assert len(answers["two"]) + len(answers["three"]) + received.count(SHUTTING_DOWN) == 2, received
    assert len(received) == 3, received


@pytest.mark.parametrize("driver", platforms(), indirect=True)
async def test_a_drain_that_runs_out_of_time_still_tells_the_user(driver):
    """The deadline passes while the answer is still generating: it is cancelled, but the user is told."""
    driver.generator.delay = 60
    await driver.say("take your time", "dm")
    await eventually(lambda: driver.generator.calls, what="the answer is generating")

    drained = await driver.engine.drain(deadline=0.2)
    await driver.stop()

    assert (drained.finished, drained.cancelled) == (0, 1)
    assert len(driver.received("dm")) == 1, "the cancelled message got no word at all"
