SELECT
  message_id,
  COALESCE(user_id, anonymous_id) AS person,
  ROW_NUMBER() OVER person_time AS nth,
  LAG(event) OVER person_time AS previous_event,
  COUNT(*) OVER (
    PARTITION BY source ORDER BY timestamp ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
  ) AS running_events,
  -- BigQuery sorts NULL first in ascending order.
  FIRST_VALUE(message_id) OVER (
    PARTITION BY source ORDER BY event, message_id
    ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
  ) AS first_by_event
FROM events
WINDOW person_time AS (PARTITION BY COALESCE(user_id, anonymous_id) ORDER BY timestamp)
ORDER BY message_id
