/* One row per item of an order. */
SELECT
  message_id,
  JSON_VALUE(item, '$.sku') ->> '$' AS sku
FROM events
CROSS JOIN UNNEST(CASE
  WHEN JSON_TYPE(properties, '$.items') = 'ARRAY'
  THEN CAST(properties -> '$.items' AS JSON[])
END) AS _t0(item)
ORDER BY
  message_id NULLS FIRST,
  sku NULLS FIRST
