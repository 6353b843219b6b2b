-- Events per calendar month of event time; BigQuery's DATE_TRUNC returns a DATE.
SELECT
  DATE_TRUNC(DATE(timestamp), MONTH) AS month,
  COUNT(*) AS events
FROM events
GROUP BY month
ORDER BY month
