-- The production table name: only its last part names the table here.
SELECT
  e.source,
  COUNT(*) AS events,
  MIN(e.received_at) AS first_received_at
FROM `my-project.analytics.events` AS e
WHERE e.received_at >= @start AND e.received_at < @end
GROUP BY e.source
ORDER BY e.source
