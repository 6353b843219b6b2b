/* Events per week of event time; BigQuery's WEEK starts on Sunday. */
SELECT
  CAST(DATE_TRUNC('WEEK', CAST(timestamp AS DATE) + INTERVAL '1' DAY) + INTERVAL '-1' DAY AS DATE) AS week,
  COUNT(*) AS events
FROM events
GROUP BY
  week
ORDER BY
  week NULLS FIRST
