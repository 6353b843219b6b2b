-- Events per week of event time; BigQuery's WEEK starts on Sunday.
SELECT
  DATE_TRUNC(DATE(timestamp), WEEK) AS week,
  COUNT(*) AS events
FROM events
GROUP BY week
ORDER BY week
