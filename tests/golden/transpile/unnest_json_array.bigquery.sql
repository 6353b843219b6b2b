-- One row per item of an order.
SELECT
  message_id,
  JSON_VALUE(item, '$.sku') AS sku
FROM events, UNNEST(JSON_EXTRACT_ARRAY(properties, '$.items')) AS item
ORDER BY message_id, sku
