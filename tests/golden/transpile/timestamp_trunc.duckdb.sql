/* Events per hour of arrival, inside the run's interval. */
SELECT
  DATE_TRUNC('HOUR', received_at) AS hour,
  COUNT(*) AS events
FROM events
WHERE
  received_at >= $start AND received_at < $end
GROUP BY
  hour
ORDER BY
  hour NULLS FIRST
