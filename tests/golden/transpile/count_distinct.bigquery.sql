SELECT
  source,
  COUNT(*) AS events,
  COUNT(DISTINCT user_id) AS users,
  COUNT(DISTINCT COALESCE(user_id, anonymous_id)) AS people
FROM events
GROUP BY source
ORDER BY source
