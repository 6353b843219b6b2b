/* Every type listed, even those with no events. */
SELECT
  kind,
  CAST(COUNT(CASE WHEN type = kind THEN 1 END) AS BIGINT) AS events
FROM events
CROSS JOIN UNNEST(['track', 'page', 'identify', 'screen']) AS _t0(kind)
GROUP BY
  kind
ORDER BY
  kind NULLS FIRST
