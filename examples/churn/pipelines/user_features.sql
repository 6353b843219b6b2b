/* headwater
description = "Per user: activity over the 28 days before the run, and whether they cancelled."
schedule = "@daily"
kind = "full"
key = ["user_id"]
person = ["user_id"]                 # an erasure deletes the person's row
audits = [{ not_null = ["user_id", "sessions", "events", "days_active", "days_since_seen"] }]
*/
SELECT
  user_id,
  CAST(COUNTIF(event = 'Session Started') AS FLOAT64) AS sessions,
  CAST(COUNT(*) AS FLOAT64) AS events,
  CAST(COUNT(DISTINCT DATE(timestamp)) AS FLOAT64) AS days_active,
  TIMESTAMP_DIFF(@end, MAX(timestamp), HOUR) / 24 AS days_since_seen,
  COUNTIF(event = 'Subscription Cancelled') > 0 AS cancelled
FROM events
WHERE user_id IS NOT NULL
  AND timestamp >= TIMESTAMP_SUB(@end, INTERVAL 28 DAY)
  AND timestamp < @end
GROUP BY user_id
