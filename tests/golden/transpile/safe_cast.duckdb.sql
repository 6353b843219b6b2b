/* Properties sent as text; what does not parse becomes NULL instead of failing the run. */
SELECT
  message_id,
  TRY_CAST(JSON_VALUE(properties, '$.price') ->> '$' AS DOUBLE) AS price,
  CASE
    WHEN REGEXP_FULL_MATCH(TRIM(JSON_VALUE(properties, '$.quantity') ->> '$'), '[+-]?[0-9]+')
    THEN TRY_CAST(TRIM(JSON_VALUE(properties, '$.quantity') ->> '$') AS BIGINT)
    WHEN REGEXP_FULL_MATCH(TRIM(JSON_VALUE(properties, '$.quantity') ->> '$'), '\+?0[xX][0-9a-fA-F]+')
    THEN TRY_CAST(LTRIM(TRIM(JSON_VALUE(properties, '$.quantity') ->> '$'), '+-') AS BIGINT)
    WHEN REGEXP_FULL_MATCH(TRIM(JSON_VALUE(properties, '$.quantity') ->> '$'), '-0[xX][0-9a-fA-F]+')
    THEN -TRY_CAST(LTRIM(TRIM(JSON_VALUE(properties, '$.quantity') ->> '$'), '+-') AS BIGINT)
  END AS quantity
FROM events
ORDER BY
  message_id NULLS FIRST
