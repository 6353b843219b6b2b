/* Each person's latest event. */
SELECT
  COALESCE(user_id, anonymous_id) AS person,
  message_id,
  timestamp
FROM events
WHERE
  type <> 'alias'
QUALIFY
  ROW_NUMBER() OVER (
    PARTITION BY COALESCE(user_id, anonymous_id)
    ORDER BY timestamp DESC, message_id DESC
  ) = 1
ORDER BY
  person NULLS FIRST
