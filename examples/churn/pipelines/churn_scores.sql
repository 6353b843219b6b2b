/* headwater
description = "Each user's churn probability, by the churn model; the product reads it by user_id."
schedule = "@daily"
kind = "full"
model = "churn"
key = ["user_id"]
person = ["user_id"]                 # an erasure deletes the person's row
audits = [
  { not_null = ["churn_probability"] },
  { sql = "SELECT * FROM output WHERE churn_probability < 0 OR churn_probability > 1" },
]
*/
SELECT user_id, sessions, events, days_active, days_since_seen
FROM user_features
