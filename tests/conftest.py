"""Shared pytest fixtures (over :mod:`kit`)."""
import pytest

import kit


@pytest.fixture
def one_thread():
    """Run a test with one intra-op thread (:func:`kit.one_thread`): tiny models on a 2-core machine
    only spin-wait with more, and results do not depend on the thread count."""
    with kit.one_thread():
        yield
