/* Whole minutes from event time to arrival. */
SELECT
  message_id,
  DATE_SUB('MINUTE', timestamp, received_at) AS minutes_late
FROM events
ORDER BY
  message_id NULLS FIRST
