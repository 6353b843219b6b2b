"""Python functions shipped to Spark's executors: a pipeline's own module travels with them."""

from __future__ import annotations

import sys
import sysconfig
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from pyspark import cloudpickle

_PICKLE_LOCK = threading.Lock()


@contextmanager
def shipped(fn: Callable[..., object]) -> Iterator[None]:
    """Pickle ``fn``'s module by value while Spark pickles ``fn``, unless it is installed.

    A Python pipeline's module (``headwater_pipelines.NAME``) exists only in
    this process: by reference, the executors could not import it.
    """
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    if module is None or module.__name__ == "__main__" or _installed(module):
        yield
        return
    with _PICKLE_LOCK:
        registered = module.__name__ in cloudpickle.list_registry_pickle_by_value()
        if not registered:
            cloudpickle.register_pickle_by_value(module)
        try:
            yield
        finally:
            if not registered:
                cloudpickle.unregister_pickle_by_value(module)


def _installed(module: ModuleType) -> bool:
    """Whether ``module`` comes from the standard library or site-packages."""
    origin = getattr(module, "__file__", None)
    if origin is None:
        return True  # built in
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    return any(Path(origin).resolve().is_relative_to(Path(root).resolve()) for root in roots)
