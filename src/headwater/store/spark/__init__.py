"""The Spark engine: a warehouse of Parquet folders, computed by Spark."""

from headwater.store.spark.engine import SparkEngine

__all__ = ["SparkEngine"]
