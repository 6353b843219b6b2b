-- Every type listed, even those with no events.
SELECT
  kind,
  COUNTIF(type = kind) AS events
FROM events
CROSS JOIN UNNEST(['track', 'page', 'identify', 'screen']) AS kind
GROUP BY kind
ORDER BY kind
