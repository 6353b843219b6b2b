/* Events per hour of arrival, inside the run's interval. */
SELECT
  CAST(DATE_TRUNC('hour', CAST(received_at AS TIMESTAMPTZ) AT TIME ZONE 'UTC') AS TIMESTAMP) AT TIME ZONE 'UTC' AS hour,
  COUNT(*) AS events
FROM events
WHERE
  received_at >= $start AND received_at < $end
GROUP BY
  hour
ORDER BY
  hour NULLS FIRST
