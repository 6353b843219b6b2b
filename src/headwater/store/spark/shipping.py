"""Python functions shipped to Spark's executors: a pipeline's own module travels with them,
and what they raise there comes back whole."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
import re
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


_CARRIED = re.compile(r"HW-ERROR:(?P<mac>[0-9a-f]{64}):(?P<blob>[A-Za-z0-9+/=]+):HW-ERROR")


def carried(exc: Exception, key: bytes) -> BaseException | None:
    """The exception a function raised on an executor, out of the text of Spark's error
    (``map_batches`` pickles it there, signed with ``key``, which only the task knows), so
    the driver raises what the function raised: a model's error with its model, version
    and first bad row, as the other engines give it. ``None`` when the text carries none
    or its signature does not match."""
    found = _CARRIED.search(str(exc))
    if found is None:
        return None
    blob = found.group("blob").encode()
    expected = hmac.new(key, blob, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, found.group("mac")):
        return None
    try:
        # Signed with a key that never left this process but in the task: our own pickle.
        error = pickle.loads(base64.b64decode(blob))  # noqa: S301
    except Exception:  # a class this process cannot rebuild: Spark's text, then
        return None
    return error if isinstance(error, BaseException) else None
