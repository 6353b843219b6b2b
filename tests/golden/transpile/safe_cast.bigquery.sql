-- Properties sent as text; what does not parse becomes NULL instead of failing the run.
SELECT
  message_id,
  SAFE_CAST(JSON_VALUE(properties, '$.price') AS FLOAT64) AS price,
  SAFE_CAST(JSON_VALUE(properties, '$.quantity') AS INT64) AS quantity
FROM events
ORDER BY message_id
