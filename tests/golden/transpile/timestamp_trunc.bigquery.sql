-- Events per hour of arrival, inside the run's interval.
SELECT
  TIMESTAMP_TRUNC(received_at, HOUR) AS hour,
  COUNT(*) AS events
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY hour
ORDER BY hour
