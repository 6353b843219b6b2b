-- Scalars out of the JSON columns: strings unquoted, objects and arrays NULL.
SELECT
  message_id,
  JSON_VALUE(properties, '$.plan') AS plan,
  JSON_VALUE(context, '$.page.path') AS page_path
FROM events
ORDER BY message_id
