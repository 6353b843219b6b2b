-- Whole minutes from event time to arrival.
SELECT
  message_id,
  TIMESTAMP_DIFF(received_at, timestamp, MINUTE) AS minutes_late
FROM events
ORDER BY message_id
