/* Events per week of event time; BigQuery's WEEK starts on Sunday. */
SELECT
  CAST((
    CAST(CAST(MAKE_TIMESTAMP(EPOCH_US(timestamp)) AS DATE) AS DATE) - CAST((
      (
        (
          (
            CAST((
              DAYOFWEEK(CAST(CAST(MAKE_TIMESTAMP(EPOCH_US(timestamp)) AS DATE) AS DATE)) + 1
            ) AS BIGINT) - 1
          ) - 0
        ) + 7
      ) % 7
    ) AS INT)
  ) AS DATE) AS week,
  COUNT(*) AS events
FROM events
GROUP BY
  week
ORDER BY
  week NULLS FIRST
