"""One FIFO lock per key: holders in arrival order, different keys at once, nothing kept when idle."""

import asyncio

from bot.core.keyed_lock import KeyedLock


async def test_holders_of_one_key_run_one_at_a_time_in_arrival_order():
    locks = KeyedLock()
    order: list[int] = []
    inside = 0

    async def hold(i: int) -> None:
        nonlocal inside
        async with locks.hold("k"):
            inside += 1
            assert inside == 1
            await asyncio.sleep(0)
            order.append(i)
            inside -= 1

    await asyncio.gather(*(hold(i) for i in range(10)))
    assert order == list(range(10))


async def test_different_keys_do_not_wait_for_each_other():
    locks = KeyedLock()
    release = asyncio.Event()
    holding_a = asyncio.Event()

    async def hold_a() -> None:
        async with locks.hold("a"):
            holding_a.set()
            await release.wait()

    task = asyncio.create_task(hold_a())
    await holding_a.wait()
    async with locks.hold("b"):  # would hang here if "b" waited for "a"
        assert len(locks) == 2
    release.set()
    await task


async def test_entries_are_dropped_when_nobody_holds_or_waits():
    locks = KeyedLock()
    await asyncio.gather(*(_enter(locks, f"k{i}") for i in range(20)))
    assert len(locks) == 0


async def test_an_error_inside_releases_the_key():
    locks = KeyedLock()
    try:
        async with locks.hold("k"):
            raise ValueError("boom")
    except ValueError:
        pass
    assert len(locks) == 0
    await asyncio.wait_for(_enter(locks, "k"), timeout=5)


async def _enter(locks: KeyedLock, key: str) -> None:
    async with locks.hold(key):
        await asyncio.sleep(0)
