/* The two hours before the interval's end, flagging those on the day before it. */
SELECT
  message_id,
  CAST(CAST($end AS DATE) - INTERVAL '1' DAY AS DATE) AS previous_day,
  CAST(MAKE_TIMESTAMP(EPOCH_US(timestamp)) AS DATE) = CAST(CAST($end AS DATE) - INTERVAL '1' DAY AS DATE) AS on_previous_day
FROM events
WHERE
  timestamp >= (
    $end - INTERVAL '2' HOUR
  ) AND timestamp < $end
ORDER BY
  message_id NULLS FIRST
