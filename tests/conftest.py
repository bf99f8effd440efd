"""Shared test set-up: float32 everywhere, no network, deterministic torch, and one persistent compilation cache
for the whole run.

The cache: the resume, preemption and CLI tests start many subprocesses that compile the same tiny programs; a
per-run cache directory (made by the first process, inherited through the environment by pytest-xdist workers and
every subprocess) lets each program compile once. It changes no numbers: a cached executable is the one XLA would
build. It lives only for this run, so a CI timing is a cold-cache timing. Set JAX_COMPILATION_CACHE_DIR yourself to
keep one across runs.
"""

import atexit
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="zoomiqa-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
# tiny programs compile in well under JAX's default 1 s threshold, and they are most of what the tests compile
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_collection_modifyitems(config, items):
    """Slow tests first, so that pytest-xdist (tests/run.sh runs two workers) starts the long ones while the short
    ones fill the gaps, instead of one long test running alone at the end. Otherwise the collection order is kept."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
