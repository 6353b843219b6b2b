// Loads @segment/analytics-next (its UMD build, window.AnalyticsNext) with settings given
// inline instead of fetched from cdn.segment.com, points its Segment.io destination at
// the collector, and sends every call type. Resolves to what the library reported.
'use strict'

window.sendEveryType = async function sendEveryType(config) {
  const { AnalyticsBrowser } = window.AnalyticsNext
  const { tag, writeKey } = config
  const errors = []
  const [analytics] = await AnalyticsBrowser.load(
    {
      writeKey,
      cdnURL: location.origin,
      cdnSettings: {
        integrations: { 'Segment.io': { apiKey: writeKey } },
        // The library's own usage metrics would go to {apiHost}/m every 30 s.
        metrics: { sampleRate: 0 },
      },
    },
    {
      integrations: {
        'Segment.io': {
          apiHost: config.apiHost,
          protocol: 'http',
          deliveryStrategy: config.batching
            ? { strategy: 'batching', config: { size: 100, timeout: 500 } }
            : { strategy: 'standard', config: {} },
        },
      },
    }
  )
  analytics.on('error', (err) => errors.push(`${err.code}: ${err.reason}`))
  analytics.setAnonymousId(`${tag}-anon`)

  const userId = `${tag}-u`
  const calls = [
    () => analytics.identify(userId, { email: 'ada@example.com', plan: 'pro' }),
    () => analytics.track('Order Completed', { total: 42.5, items: [1, 2] }),
    () => analytics.page('Docs', 'Pricing', { path: '/pricing' }),
    () => analytics.screen('Onboarding', 'Welcome', { step: 1 }),
    () => analytics.group(`${tag}-g`, { name: 'Acme' }),
    () => analytics.alias(userId, `${tag}-old`),
  ]
  const delivered = []
  for (const call of calls) {
    // Each promise settles once the destination has handled the event: with the
    // standard strategy that is after its request was answered.
    const ctx = await call()
    const failed = ctx.failedDelivery()
    delivered.push({ type: ctx.event.type, failed: failed ? String(failed.reason) : null })
  }
  return { delivered, errors, library: analytics.VERSION }
}
