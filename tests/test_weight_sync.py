"""The NCCL weight sync's round handshake on CPU (a real torch TCPStore, threads for the two ends), the wire
dtype and the update info. The NCCL transfer itself needs GPUs and vLLM (tests/test_rollout_vllm.py); the
weight-equality check through the rollout seam is in tests/test_verl_engine.py (HF backend, CPU)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import torch

from pipeline.distributed import free_port
from pipeline.rollout.weight_sync import Handshake, WeightSyncError, to_wire, weight_meta


@pytest.fixture
def store_address():
    """A TCP store master, as trainer rank 0's weight group hosts one at master_port."""
    port = free_port("127.0.0.1")
    master = torch.distributed.TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=30),
                                        wait_for_workers=False)
    yield "127.0.0.1", port
    del master


META = weight_meta([("model.embed_tokens.weight", (8, 4), torch.float32), ("step", (), torch.int64)],
                   torch.bfloat16)


def _in_thread(fn):
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def test_update_info_carries_the_wire_dtype_of_floating_tensors_only():
    assert META.update_info() == {"names": ["model.embed_tokens.weight", "step"],
                                  "dtype_names": ["bfloat16", "int64"], "shapes": [[8, 4], []]}
    assert to_wire(torch.ones(2), torch.bfloat16).dtype == torch.bfloat16
    assert to_wire(torch.ones(2, dtype=torch.int64), torch.bfloat16).dtype == torch.int64
    assert to_wire(torch.ones(2), None).dtype == torch.float32


def test_the_sender_starts_only_when_every_engine_rank_is_inside_its_receive(store_address):
    """Two rollout workers (TP 2 and TP 1) enter at different times; the sender waits for all three ranks, then
    every receiver gets the round's update info. Rounds after that are independent."""
    sender = Handshake.connect(*store_address, timeout_s=20)
    first = Handshake.connect(*store_address, timeout_s=20)
    late = Handshake.connect(*store_address, timeout_s=20)
    for round_ in (1, 2):
        opened, opened_box = _in_thread(lambda: sender.open_round(3, META))
        got_first, first_box = _in_thread(lambda: first.enter_round(2))
        time.sleep(0.5)
        assert opened.is_alive() and got_first.is_alive()  # 2 of 3 ranks in: nobody may start
        got_late, late_box = _in_thread(lambda: late.enter_round(1))
        for thread in (opened, got_first, got_late):
            thread.join(timeout=20)
        assert "error" not in opened_box and "error" not in first_box and "error" not in late_box
        assert first_box["value"] == late_box["value"] == META
        assert sender.round == first.round == late.round == round_


def test_a_receiver_busy_past_the_timeout_makes_both_ends_give_up_cleanly(store_address):
    """The worker is still generating when the trainer wants to sync: the trainer raises after its timeout with
    nothing sent, and the worker, arriving later, is told to give up instead of waiting in a broadcast."""
    sender = Handshake.connect(*store_address, timeout_s=0.5)
    receiver = Handshake.connect(*store_address, timeout_s=5)
    started = time.monotonic()
    with pytest.raises(WeightSyncError, match="0 of 1 engine rank"):
        sender.open_round(1, META)
    assert time.monotonic() - started < 5
    with pytest.raises(WeightSyncError, match="gave up"):
        receiver.enter_round(1)
    # The next round works again: both ends counted the failed one.
    sender.timeout_s = 20
    opened, box = _in_thread(lambda: sender.open_round(1, META))
    assert receiver.enter_round(1) == META
    opened.join(timeout=20)
    assert "error" not in box


def test_a_receiver_whose_trainer_never_sends_times_out(store_address):
    receiver = Handshake.connect(*store_address, timeout_s=0.5)
    with pytest.raises(WeightSyncError, match="did not start sending"):
        receiver.enter_round(1)
