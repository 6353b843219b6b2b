// Sends every call type through @rudderstack/rudder-sdk-node, unmodified, then flushes.
// Usage: node rudder-node.js '{"host": ..., "writeKey": ..., "tag": ..., "gzip": true}'
// The last line of stdout is a JSON report: every delivery error the SDK reported.
'use strict'

const Analytics = require('@rudderstack/rudder-sdk-node')

async function main() {
  const config = JSON.parse(process.argv[2])
  const { tag } = config
  const errors = []
  const client = new Analytics(config.writeKey, {
    dataPlaneUrl: config.host,
    gzip: config.gzip,
    flushAt: 20,
    flushInterval: 60000,
    // Zero turns axios-retry off: a refused batch is reported at once.
    retryCount: 0,
    timeout: 10000,
    logLevel: 'error',
    errorHandler: (err) => {
      const status = err.response ? err.response.status : err.code
      const body = err.response ? JSON.stringify(err.response.data) : ''
      errors.push(`${status} ${body}`.trim())
    },
  })

  const userId = `${tag}-u`
  client.track({ userId, event: 'Order Completed', properties: { total: 42.5, items: [1, 2] } })
  client.identify({ userId, traits: { email: 'ada@example.com', plan: 'pro' } })
  client.page({ userId, category: 'Docs', name: 'Pricing', properties: { path: '/pricing' } })
  client.screen({ userId, name: 'Welcome', properties: { step: 1 } })
  client.group({ userId, groupId: `${tag}-g`, traits: { name: 'Acme' } })
  client.alias({ userId, previousId: `${tag}-old` })

  await client.flush()
  process.stdout.write('\n' + JSON.stringify({ errors }) + '\n')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
