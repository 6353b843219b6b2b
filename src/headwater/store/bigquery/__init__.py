"""The BigQuery engine: the warehouse a company already keeps its data in."""

from headwater.store.bigquery.engine import BigQueryEngine, BudgetExceeded, bq_schema

__all__ = ["BigQueryEngine", "BudgetExceeded", "bq_schema"]
