/* Events per hour of arrival, inside the run's interval. */
SELECT
  MAKE_TIMESTAMPTZ(
    EPOCH_US(
      CAST(DATE_TRUNC('hour', MAKE_TIMESTAMP(EPOCH_US(CAST(received_at AS TIMESTAMPTZ)))) AS TIMESTAMP)
    )
  ) AS hour,
  COUNT(*) AS events
FROM events
WHERE
  received_at >= $start AND received_at < $end
GROUP BY
  hour
ORDER BY
  hour NULLS FIRST
