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


# ---------------------------------------------------------------------------------------------------------
# The trainer group's NCCL path with stand-in ranks and engines (no GPU): what fails there, and in what order
# the calls reach a rollout worker.
# ---------------------------------------------------------------------------------------------------------
STORE_TIMEOUT = "DistStoreError: Timed out after 300 seconds waiting for clients. 1/2 clients joined."


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _stand_ins(ray, fail: str | None):
    @ray.remote
    class Rank:
        def rendezvous_address(self):
            return "127.0.0.1", 1

        def init_weight_group(self, address, port, world_size):
            if fail == "store":
                raise RuntimeError(STORE_TIMEOUT)

        def broadcast_weights(self, dtype):
            if fail == "nccl":
                raise RuntimeError("NCCL error: unhandled system error (run with NCCL_DEBUG=INFO for details)")
            return {"tensors": 3, "bytes": 300}

    @ray.remote
    class Engine:  # a rollout worker's weight-sync surface, recording what reached it
        def __init__(self):
            self.calls = []

        def weight_group_ranks(self):
            return 1

        def init_weight_group(self, address, port, offset, world_size):
            self.calls.append("init_weight_group")
            return [offset]

        def ready(self):
            self.calls.append("ready")
            return True

        def receive_weights(self, version):
            self.calls.append("receive_weights")
            return version

        def seen(self):
            return self.calls

    return Rank.remote(), [Engine.remote(), Engine.remote()]


def _group(ray, fail: str | None):
    from actors.trainer import TrainerGroup
    from pipeline.training.config import TrainerConfig

    rank, engines = _stand_ins(ray, fail)
    group = TrainerGroup.__new__(TrainerGroup)  # the driver-side handle without starting FSDP ranks
    group.cfg = TrainerConfig(start_timeout_s=30, call_timeout_s=30)
    group.ranks, group.weight_sync, group.weight_dtype = [rank], "nccl", "bfloat16"
    group._weight_group_members, group.version = None, 1
    return group, engines


def test_the_weight_group_is_built_up_front_and_a_sync_is_queued_in_one_go(ray_local):
    group, engines = _group(ray_local, fail=None)
    group.init_weight_group(engines)
    out = group.sync_weights(engines, timeout_s=30)
    assert out["synced_version"] == 1.0 and out["weight_sync_tensors"] == 3
    # No `ready` probe before the receive: nothing can slip in between, and nothing rebuilt the group.
    assert ray_local.get([e.seen.remote() for e in engines], timeout=30) == [["init_weight_group",
                                                                               "receive_weights"]] * 2


@pytest.mark.parametrize("fail", ["store", "nccl"])
def test_a_store_or_nccl_failure_is_a_weight_sync_error_naming_it(ray_local, fail):
    from pipeline.rollout.weight_sync import WeightSyncError

    group, engines = _group(ray_local, fail)
    with pytest.raises(WeightSyncError) as caught:
        group.init_weight_group(engines)
        group.sync_weights(engines, timeout_s=30)
    text = str(caught.value)
    assert ("DistStoreError" in text) if fail == "store" else ("NCCL error" in text and "version 1" in text)


def test_other_rollout_workers_after_the_group_was_built_are_a_weight_sync_error(ray_local):
    from pipeline.rollout.weight_sync import WeightSyncError

    group, engines = _group(ray_local, fail=None)
    group.init_weight_group(engines)
    with pytest.raises(WeightSyncError, match="changed after the NCCL weight group was built"):
        group.sync_weights(engines[:1], timeout_s=30)
