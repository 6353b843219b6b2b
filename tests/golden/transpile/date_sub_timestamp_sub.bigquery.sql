-- The two hours before the interval's end, flagging those on the day before it.
SELECT
  message_id,
  DATE_SUB(DATE(@end), INTERVAL 1 DAY) AS previous_day,
  DATE(timestamp) = DATE_SUB(DATE(@end), INTERVAL 1 DAY) AS on_previous_day
FROM events
WHERE timestamp >= TIMESTAMP_SUB(@end, INTERVAL 2 HOUR) AND timestamp < @end
ORDER BY message_id
