"""relay_client.channel: the asyncio.Queue subset the streams use, with the same semantics."""

from __future__ import annotations

import asyncio

import pytest

from relay_client.channel import Channel


async def test_items_come_out_in_order_and_a_getter_waits_for_the_first() -> None:
    channel: Channel[int] = Channel()
    getter = asyncio.ensure_future(channel.get())
    await asyncio.sleep(0)
    assert not getter.done()
    channel.put_nowait(1)
    channel.put_nowait(2)
    assert await getter == 1
    assert (channel.qsize(), channel.get_nowait(), channel.empty()) == (1, 2, True)
    with pytest.raises(asyncio.QueueEmpty):
        channel.get_nowait()


async def test_a_full_channel_holds_put_until_an_item_is_taken() -> None:
    channel: Channel[int] = Channel(2)
    await channel.put_all([1, 2])
    assert channel.full()
    with pytest.raises(asyncio.QueueFull):
        channel.put_nowait(3)
    putter = asyncio.ensure_future(channel.put_all([3, 4]))
    await asyncio.sleep(0)
    assert not putter.done() and channel.qsize() == 2
    taken = [channel.get_nowait()]
    await asyncio.sleep(0)
    taken.append(channel.get_nowait())
    await asyncio.sleep(0)
    taken += [await channel.get(), await channel.get()]
    await putter
    assert taken == [1, 2, 3, 4] and channel.empty()


async def test_waiters_are_woken_in_order_and_a_cancelled_one_passes_its_turn_on() -> None:
    channel: Channel[str] = Channel()
    first, second, third = (asyncio.ensure_future(channel.get()) for _ in range(3))
    await asyncio.sleep(0)
    channel.put_nowait("a")  # wakes the first getter ...
    first.cancel()  # ... which is cancelled before it runs: "a" goes to the second
    channel.put_nowait("b")
    assert await second == "a"
    assert await third == "b"
    assert first.cancelled() and channel.empty()


async def test_a_cancelled_putter_passes_its_turn_on() -> None:
    channel: Channel[int] = Channel(1)
    channel.put_nowait(0)
    first, second = asyncio.ensure_future(channel.put(1)), asyncio.ensure_future(channel.put(2))
    await asyncio.sleep(0)
    assert channel.get_nowait() == 0  # wakes the first putter ...
    first.cancel()  # ... which is cancelled: the second one puts
    await second
    assert (channel.get_nowait(), channel.empty(), first.cancelled()) == (2, True, True)
