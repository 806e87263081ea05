// With DS_TRIO_CONFORMANCE_TOKEN set, every request the suite makes to the
// server under test carries that bearer token, unless it names its own
// Authorization (the subscription callbacks and acks carry their tokens).
// The suite's cases are untouched: this is how any client would hold a token.
const token = process.env.DS_TRIO_CONFORMANCE_TOKEN
const baseUrl = process.env.DS_TRIO_CONFORMANCE_URL

if (token && baseUrl) {
  const origin = new URL(baseUrl).origin
  const plainFetch = globalThis.fetch
  globalThis.fetch = (input, init = {}) => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url
    if (!url.startsWith(origin)) {
      return plainFetch(input, init)
    }
    const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined))
    if (!headers.has("authorization")) {
      headers.set("authorization", `Bearer ${token}`)
    }
    return plainFetch(input, { ...init, headers })
  }
}
