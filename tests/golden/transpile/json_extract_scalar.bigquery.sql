-- The legacy spelling of JSON_VALUE, grouped on.
SELECT
  COALESCE(JSON_EXTRACT_SCALAR(properties, '$.plan'), 'unknown') AS plan,
  COUNT(*) AS events
FROM events
GROUP BY plan
ORDER BY plan
