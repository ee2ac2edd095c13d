"""Stream credit without sockets: the server's SendCredit and the consumer's ReceiveCredit."""

from __future__ import annotations

from collections import deque

import pytest

from easyrpc._core.credit import ReceiveCredit, SendCredit


def test_the_consumer_gives_slots_back_after_half_the_window() -> None:
    credit = ReceiveCredit(8)
    assert [credit.took() for _ in range(8)] == [0, 0, 0, 4, 0, 0, 0, 4]


def test_the_consumer_follows_a_window_the_server_cut() -> None:
    credit = ReceiveCredit(64)
    credit.limit(4)
    credit.limit(16)  # never widened again
    assert credit.window == 4
    assert [credit.took() for _ in range(4)] == [0, 2, 0, 2]


def test_a_window_of_one_gives_every_slot_back_at_once() -> None:
    credit = ReceiveCredit(1)
    assert [credit.took() for _ in range(3)] == [1, 1, 1]


def test_the_server_sends_only_with_credit_and_never_holds_more_than_its_maximum() -> None:
    credit = SendCredit(3, most=16)
    assert [credit.take() for _ in range(4)] == [True, True, True, False]
    credit.grant(100)
    assert credit.credit == 16


def test_a_smaller_window_is_announced_once_with_the_first_item() -> None:
    cut = SendCredit(64, most=8)
    assert cut.credit == 8
    assert cut.announce() == 8 and cut.announce() is None
    granted = SendCredit(8, most=64)
    assert granted.credit == 8 and granted.announce() is None


def test_a_call_asking_no_window_still_gets_one_item_at_a_time() -> None:
    credit = SendCredit(0, most=64)
    assert credit.credit == 1 and credit.announce() is None


@pytest.mark.parametrize(("asked", "most"), [(64, 64), (64, 8), (5, 64), (1, 1), (2, 3), (100, 7)])
def test_producer_and_consumer_never_stall_nor_run_past_the_window(asked: int, most: int) -> None:
    """The two ends in lockstep, messages in order: the producer never has more than the
    window in flight, and never waits for credit the consumer will never send."""
    server = SendCredit(asked, most)
    consumer = ReceiveCredit(asked)
    to_consumer: deque[int | None] = deque()  # items, each with the window announced
    buffered = 0  # items the consumer holds, sent and not taken
    produced = 0
    for _ in range(10_000):  # bounded
        if produced == 500 and not to_consumer and not buffered:
            break
        if produced < 500 and server.take():
            to_consumer.append(server.announce())
            produced += 1
            continue
        # the server is out of credit (or done): the consumer receives, then takes one
        assert to_consumer or buffered, f"stalled after {produced} items"
        while to_consumer:
            window = to_consumer.popleft()
            if window is not None:
                consumer.limit(window)
            buffered += 1
        assert buffered <= min(asked, most)
        buffered -= 1
        n = consumer.took()
        if n:
            server.grant(n)
    assert produced == 500 and buffered == 0
