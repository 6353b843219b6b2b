/* Events per calendar month of event time; BigQuery's DATE_TRUNC returns a DATE. */
SELECT
  CAST(DATE_TRUNC('MONTH', CAST(MAKE_TIMESTAMP(EPOCH_US(timestamp)) AS DATE)) AS DATE) AS month,
  COUNT(*) AS events
FROM events
GROUP BY
  month
ORDER BY
  month NULLS FIRST
