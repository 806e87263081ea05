// The official conformance suite, pointed at the ds_trio process whose stream
// root URL the Python harness passes in DS_TRIO_CONFORMANCE_URL.
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.DS_TRIO_CONFORMANCE_URL
if (!baseUrl) {
  throw new Error("DS_TRIO_CONFORMANCE_URL must name a running ds_trio server")
}

runConformanceTests({
  baseUrl,
  longPollTimeoutMs: Number(process.env.DS_TRIO_LONG_POLL_TIMEOUT_MS ?? "500"),
  subscriptions: true,
})
