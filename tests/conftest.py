"""Shared pytest fixtures (over :mod:`kit`), and the thread budget of pytest-xdist workers."""
import os

import pytest
import torch

import kit


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n 2``) each worker, and every tool subprocess it
    starts, gets an equal share of the CPUs as intra-op threads: two workers each spinning two
    OpenMP threads on a 2-core machine would oversubscribe it."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, (cpus or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Files holding a ``long`` test first, the rest in their order: with ``--dist loadfile
    --no-loadscope-reorder`` (``make test``) each xdist worker takes whole files in this order, so
    the minutes-long runs start at once beside the rest instead of alone at the end."""
    long_files = {item.path for item in items if item.get_closest_marker("long")}
    items.sort(key=lambda item: item.path not in long_files)


@pytest.fixture
def one_thread():
    """Run a test with one intra-op thread (:func:`kit.one_thread`): tiny models on a 2-core machine
    only spin-wait with more, and results do not depend on the thread count."""
    with kit.one_thread():
        yield
