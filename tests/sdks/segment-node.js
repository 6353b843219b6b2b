// Sends every call type through @segment/analytics-node, unmodified, then flushes.
// Usage: node segment-node.js '{"host": ..., "writeKey": ..., "tag": ..., "flushAt": 15}'
// The last line of stdout is a JSON report: the HTTP exchanges the SDK announced and
// every delivery error its callbacks saw.
'use strict'

const { Analytics } = require('@segment/analytics-node')

async function main() {
  const config = JSON.parse(process.argv[2])
  const { tag } = config
  const analytics = new Analytics({
    writeKey: config.writeKey,
    host: config.host,
    flushAt: config.flushAt,
    flushInterval: 60000,
    // A refused batch is reported at once rather than retried with backoff.
    maxRetries: 0,
    httpRequestTimeout: 10000,
  })
  const exchanges = []
  const errors = []
  analytics.on('http_response', (r) => exchanges.push({ url: r.url, status: r.status }))
  analytics.on('error', (err) => errors.push(String(err.reason ?? err.code ?? err)))
  const done = (err) => {
    if (err) errors.push(String(err))
  }

  const userId = `${tag}-u`
  analytics.track(
    { userId, event: 'Order Completed', properties: { total: 42.5, items: [1, 2] } },
    done
  )
  analytics.identify({ userId, traits: { email: 'ada@example.com', plan: 'pro' } }, done)
  analytics.page(
    { userId, category: 'Docs', name: 'Pricing', properties: { path: '/pricing' } },
    done
  )
  analytics.screen(
    { userId, category: 'Onboarding', name: 'Welcome', properties: { step: 1 } },
    done
  )
  analytics.group({ userId, groupId: `${tag}-g`, traits: { name: 'Acme' } }, done)
  analytics.alias({ userId, previousId: `${tag}-old` }, done)

  await analytics.closeAndFlush({ timeout: 20000 })
  process.stdout.write('\n' + JSON.stringify({ exchanges, errors }) + '\n')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
