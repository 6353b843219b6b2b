// Sends the calls it is given through @segment/analytics-node, unmodified, then flushes.
// Usage: node segment-calls.js '{"host": ..., "writeKey": ..., "calls": [["track", {...}], ...]}'
// The last line of stdout is a JSON report: the HTTP exchanges the SDK announced and
// every delivery error its callbacks saw.
'use strict'

const { Analytics } = require('@segment/analytics-node')

async function main() {
  const config = JSON.parse(process.argv[2])
  const analytics = new Analytics({
    writeKey: config.writeKey,
    host: config.host,
    flushAt: config.calls.length,
    flushInterval: 60000,
    maxRetries: 0,
    httpRequestTimeout: 10000,
  })
  const exchanges = []
  const errors = []
  analytics.on('http_response', (r) => exchanges.push({ url: r.url, status: r.status }))
  analytics.on('error', (err) => errors.push(String(err.reason ?? err.code ?? err)))
  for (const [method, params] of config.calls) {
    analytics[method](params, (err) => {
      if (err) errors.push(String(err))
    })
  }
  await analytics.closeAndFlush({ timeout: 20000 })
  process.stdout.write('\n' + JSON.stringify({ exchanges, errors }) + '\n')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
