/* The legacy spelling of JSON_VALUE, grouped on. */
SELECT
  COALESCE(JSON_VALUE(properties, '$.plan') ->> '$', 'unknown') AS plan,
  COUNT(*) AS events
FROM events
GROUP BY
  plan
ORDER BY
  plan NULLS FIRST
