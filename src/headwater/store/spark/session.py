"""The Spark session: one per engine, on the process's one Spark context, bound to loopback
unless the user's settings say otherwise."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Mapping

from py4j.protocol import Py4JError, Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import SparkSession

from headwater.store.errors import StoreUnavailable

#: Session settings; a user's ``spark_conf`` wins over these.
_SESSION = {
    # Nothing listens beyond loopback unless the user's conf says so.
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.session.timeZone": "UTC",
    # Replace exactly the partitions written: one interval of an output.
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    # "name" is an identifier, as in DuckDB and PostgreSQL (strings are 'text').
    "spark.sql.ansi.doubleQuotedIdentifiers": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Plain Parquet timestamps (not INT96), so other readers of the warehouse agree.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.compression.codec": "zstd",
    # Tables are Parquet folders without a catalog: keep Spark's default catalog folder
    # out of the working directory it would otherwise be created in.
    "spark.sql.warehouse.dir": os.path.join(
        tempfile.gettempdir(), f"headwater-spark-catalog-{os.getuid()}"
    ),
}


_LOCK = threading.Lock()


def session(master: str, conf: Mapping[str, str]) -> SparkSession:
    """A new session (its own temporary views) on the process's one Spark context."""
    settings = {**_SESSION, **conf}
    with _LOCK:
        if master.startswith("local"):
            # Local Python workers must be this interpreter, which has pyarrow.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder.master(master).appName("headwater")
        for key, value in settings.items():
            builder = builder.config(key, value)
        try:
            base = builder.getOrCreate()
        except (PySparkException, Py4JError, OSError) as exc:
            raise StoreUnavailable(
                "spark", f"Spark did not start ({reason(exc)}); is Java 17 installed?"
            ) from None
    session = base.newSession()
    for key, value in settings.items():
        # A new session starts from the context's settings; SQL settings are per session.
        if session.conf.isModifiable(key):
            session.conf.set(key, value)
    return session


def reason(exc: BaseException) -> str:
    """The error's first line; for one raised in the JVM, its message, not py4j's."""
    text = str(exc.java_exception.toString()) if isinstance(exc, Py4JJavaError) else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
