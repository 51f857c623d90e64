"""Shared fixtures. Tests run on a 2-core CPU box: models are tiny and built once per session."""

import os
import sys
from pathlib import Path

import pytest

# Tests import `pipeline` and `actors` from the checkout, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Unit and end-to-end tests use the random tiny critic with short answers (as the embedded default did before
# it trained its critic): building the trained one takes minutes, and test_main's from-nothing run (fresh
# caches) exercises it for real.
RANDOM_CRITIC = [
    "models.reward.tiny.train.steps=0",
    "reward.limits={max_errors: 2, max_location_chars: 16, max_description_chars: 32}",
    *[f"reward.tasks.{t}.sampling.max_new_tokens=640" for t in ("chart", "table", "svg")],
]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """A cache dir private to this test session, so tests exercise the build, not a stale user cache."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def models_cfg(model_cache):
    """The embedded default's models (random tiny critic), built: paths are the session cache's directories."""
    from pipeline.config import load_config
    from pipeline.tiny import ensure_models

    return ensure_models(load_config(None, [f"models.cache_dir={model_cache}", *RANDOM_CRITIC]).models)


@pytest.fixture(scope="session")
def policy_dir(models_cfg) -> Path:
    return Path(models_cfg.policy.path)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """The driver's synthetic-set cache, shared by this session's end-to-end runs (rendered once)."""
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="session")
def run_caches(model_cache, policy_dir, data_cache) -> list[str]:
    """Overrides that point a driver run at the session's caches, the tiny policy already built (its warm
    start takes a minute or more, which must not count against a run's own timeout). The test that checks
    the from-nothing path (test_main's embedded default) uses fresh caches instead."""
    return [f"models.cache_dir={model_cache}", f"data.cache_dir={data_cache}", *RANDOM_CRITIC]


def pytest_sessionfinish(session, exitstatus):
    """Release what in-process tests leave running while the interpreter is whole: the sandboxed renderers'
    zygotes and Chromium driver thread (`pipeline.render.render`), and a Ray client a test did not shut down."""
    if "pipeline.render" in sys.modules:
        sys.modules["pipeline.render"].close_all()
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


_EXIT_STATUS = pytest.StashKey[int]()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Exit with pytest's own status once pytest is done. The interpreter's teardown of torch's, Ray's and
    Chromium's native threads is not part of the test result and must not replace it: a full suite once
    ended "578 passed" and then "Segmentation fault" (exit 139) in that teardown."""
    status = config.stash.get(_EXIT_STATUS, None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
