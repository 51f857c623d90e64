"""Ray bring-up: a request no node can satisfy fails at once, naming the group and the resource; an actor that
never starts is reported, naming its group; a pool replaces a failed actor once, by identity, within its budget."""

import os

import pytest
import ray

from actors.cluster import ActorRequest, ResourceError, check_fits, connect, live_node_groups
from actors.pool import ActorSlots, ActorStartError, ReplacementBudgetSpent, wait_ready
from pipeline.config import RayConfig


@pytest.fixture(scope="module")
def local_ray():
    # What KubeRay sets in every pod of a worker group (here: "render"); Ray turns it into the node label
    # ray.io/node-group that the actor groups' node_group settings select.
    previous = os.environ.get("RAY_NODE_TYPE_NAME")
    os.environ["RAY_NODE_TYPE_NAME"] = "render"
    try:
        how = connect(RayConfig(address="local", num_cpus=2, num_gpus=0))
    finally:
        if previous is None:
            os.environ.pop("RAY_NODE_TYPE_NAME")
        else:
            os.environ["RAY_NODE_TYPE_NAME"] = previous
    assert how.startswith("local (2 CPUs")
    yield
    ray.shutdown()


def test_fitting_requests_pass(local_ray):
    check_fits([ActorRequest("rollout", 1, num_cpus=1), ActorRequest("render", 1, num_cpus=1)])


def test_replica_larger_than_any_node(local_ray):
    with pytest.raises(ResourceError) as err:
        check_fits([ActorRequest("trainer", 1, num_cpus=1, num_gpus=1)])
    msg = str(err.value)
    assert "trainer: one replica asks for 1 GPU but the largest node in the cluster has 0 GPU" in msg


def test_total_over_cluster(local_ray):
    with pytest.raises(ResourceError) as err:
        check_fits([ActorRequest("rollout", 2, num_cpus=1), ActorRequest("reward", 1, num_cpus=1)])
    msg = str(err.value)
    # rollout takes both CPUs (first-fit, in the order given); reward is the group left without a node
    assert "reward: only 0 of 1 replicas fit; CPU: 1×1 = 1 CPU wanted, the cluster has 2" in msg
    assert "rollout" not in msg.split("reward:")[0].split("Ray would wait forever):")[1]


def test_live_nodes_and_node_group_targeting(local_ray):
    groups = live_node_groups()
    assert [(g.name, g.cpus, g.gpus) for g in groups] == [("render", 2.0, 0.0)]
    check_fits([ActorRequest("render", 2, num_cpus=1, node_group="render")])
    with pytest.raises(ResourceError, match="trainer: node group 'trainer' is not in the cluster"):
        check_fits([ActorRequest("trainer", 1, num_cpus=1, node_group="trainer")])


def test_label_selector_places_actors_on_their_node_group(local_ray):
    """What the driver passes to .options(): the request's label_selector, honoured by Ray 2.60."""
    @ray.remote(num_cpus=0)
    class Probe:
        def ready(self):
            return True

    here = Probe.options(label_selector=ActorRequest("render", 1, node_group="render").label_selector()).remote()
    assert ray.get(here.ready.remote(), timeout=60)
    elsewhere = Probe.options(label_selector=ActorRequest("trainer", 1, node_group="trainer").label_selector()).remote()
    with pytest.raises(ray.exceptions.GetTimeoutError):  # no node of that group: Ray keeps it pending
        ray.get(elsewhere.ready.remote(), timeout=3)
    ray.kill(here)
    ray.kill(elsewhere)


def test_actor_that_never_starts_is_reported(local_ray):
    @ray.remote(num_cpus=0)
    class Slow:
        def __init__(self):
            import time

            time.sleep(30)

        def ready(self):
            return True

    handle = Slow.remote()
    with pytest.raises(ActorStartError, match="slowpoke: 1 actor"):
        wait_ready([handle], "slowpoke", timeout_s=1.0)
    ray.kill(handle)


def test_a_pool_replaces_a_failed_actor_once_by_identity_within_its_budget(local_ray):
    @ray.remote(num_cpus=0)
    class Member:
        def __init__(self, serial):
            self.serial = serial

        def ready(self):
            return self.serial

    pool = ActorSlots("member", Member.remote, 2, start_timeout_s=60, max_replacements=1)
    try:
        assert pool.ready_answers == [0, 1]
        dead, alive = pool.live()
        successor = pool.replace(dead)
        assert (successor.index, successor.serial) == (0, 2) and pool.live() == [successor.handle, alive]
        assert pool.replace(dead) is None  # a second caller that noticed the same failure replaces nothing
        assert pool.started(successor.handle)
        with pytest.raises(ReplacementBudgetSpent):
            pool.replace(alive)
        assert pool.replacements == 1 and pool.live() == [successor.handle, alive]  # the slot keeps it
        assert pool.retire(alive) and pool.live() == [successor.handle] and pool.serials == [2]
    finally:
        pool.shutdown()
    assert pool.live() == []
