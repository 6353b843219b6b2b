SELECT
  APPROX_COUNT_DISTINCT(anonymous_id) AS anonymous_ids,
  APPROX_COUNT_DISTINCT(COALESCE(user_id, anonymous_id)) AS people
FROM events
