// A lean many-connection client for the fan-out and idle-connection scenarios.
//
//   node fanout.mjs '{"mode": "longpoll", "port": 4437, "path": "/v1/stream/x", ...}'
//
// The JSON config (argv[2], else stdin) picks a mode:
//   longpoll  n waiters long-poll the tail; each of `rounds` appends wakes them all
//   sse       n SSE subscribers; `rate` appends per second for `seconds`
// and prints one JSON object of results. With "rss": true it also reports the
// server's RSS growth per connection once all n are open, before any append
// (rounds 0 or seconds 0: idle connections only). Connections are raw `net`
// sockets with just enough HTTP/1.1 (Content-Length, chunked, close-delimited).
//
// "All waiters are registered" is judged from the server's CPU time in
// /proc/<server_pid>/stat, its workers' included: once every request has been
// written, a server that has stopped using CPU has read and parked them all. SSE subscribers are
// ready when their first control event arrives.
import net from "node:net"
import { readFileSync, readdirSync } from "node:fs"
import { StringDecoder } from "node:string_decoder"

const HEAD_END = Buffer.from("\r\n\r\n")
const EMPTY = Buffer.alloc(0)
const now = () => performance.now()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** One keep-alive HTTP/1.1 connection; one request in flight at a time. */
class Connection {
  constructor(host, port, { onHead, onBody, onResponse, onClose } = {}) {
    this.handlers = { onHead, onBody, onResponse, onClose }
    this.buf = EMPTY
    this.state = "head"
    this.closed = false
    this.socket = net.connect({ host, port })
    this.socket.setNoDelay(true)
    this.connected = new Promise((resolve, reject) => {
      this.socket.once("connect", resolve)
      this.socket.once("error", reject)
    })
    this.connected.catch(() => {}) // a failed connect also closes the socket: onClose
    this.socket.on("data", (data) => this.feed(data))
    this.socket.on("error", () => {})
    this.socket.on("close", () => {
      if (this.state === "close") this.finish()
      this.closed = true
      this.handlers.onClose?.()
    })
  }

  /** Send a request; resolves once its bytes are handed to the kernel. */
  send(method, path, headers = {}, body = null) {
    this.method = method
    let head = `${method} ${path} HTTP/1.1\r\nHost: bench\r\n`
    for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`
    if (body !== null) head += `Content-Length: ${body.length}\r\n`
    const bytes = Buffer.concat([Buffer.from(head + "\r\n"), body ?? EMPTY])
    return new Promise((resolve) => this.socket.write(bytes, resolve))
  }

  close() {
    this.socket.destroy()
  }

  feed(data) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data
    while (this.buf.length) {
      if (this.state === "head") {
        const end = this.buf.indexOf(HEAD_END)
        if (end < 0) return
        this.startResponse(this.buf.toString("latin1", 0, end))
        this.buf = this.buf.subarray(end + 4)
      } else if (this.state === "length" || this.state === "chunk") {
        const piece = this.buf.subarray(0, this.remaining)
        this.buf = this.buf.subarray(piece.length)
        this.remaining -= piece.length
        this.body(piece)
        if (this.remaining === 0) {
          if (this.state === "length") this.finish()
          else this.state = "chunk-end"
        }
      } else if (this.state === "chunk-end") {
        if (this.buf.length < 2) return
        this.buf = this.buf.subarray(2)
        this.state = "chunk-size"
      } else if (this.state === "chunk-size" || this.state === "trailer") {
        const end = this.buf.indexOf("\r\n")
        if (end < 0) return
        const line = this.buf.toString("latin1", 0, end)
        this.buf = this.buf.subarray(end + 2)
        if (this.state === "trailer") {
          if (line === "") this.finish()
        } else {
          this.remaining = parseInt(line, 16)
          this.state = this.remaining === 0 ? "trailer" : "chunk"
        }
      } else {
        this.body(this.buf) // close-delimited
        this.buf = EMPTY
      }
    }
  }

  startResponse(head) {
    const lines = head.split("\r\n")
    const headers = {}
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":")
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    }
    const status = Number(lines[0].split(" ")[1])
    this.response = { status, headers, chunks: [] }
    this.handlers.onHead?.(this.response)
    const length = headers["content-length"]
    if (this.method === "HEAD" || status === 204 || status === 304 || status < 200) this.finish()
    else if ((headers["transfer-encoding"] ?? "").includes("chunked")) this.state = "chunk-size"
    else if (length !== undefined) {
      this.remaining = Number(length)
      if (this.remaining === 0) this.finish()
      else this.state = "length"
    } else this.state = "close"
  }

  body(piece) {
    if (this.handlers.onBody) this.handlers.onBody(piece)
    else this.response.chunks.push(piece)
  }

  finish() {
    const response = this.response
    this.state = "head"
    response.body = Buffer.concat(response.chunks)
    this.handlers.onResponse?.(response)
  }
}

/** Incremental SSE parsing: calls onEvent(type, data) per complete event. */
class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent
    this.decoder = new StringDecoder("utf8")
    this.pending = ""
  }

  feed(piece) {
    this.pending += this.decoder.write(piece)
    let end
    while ((end = this.pending.indexOf("\n\n")) >= 0) {
      const block = this.pending.slice(0, end)
      this.pending = this.pending.slice(end + 2)
      let type = "message"
      const data = []
      for (const raw of block.split("\n")) {
        const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw
        if (line.startsWith("event:")) type = line.slice(6).trim()
        else if (line.startsWith("data:")) data.push(line.slice(line[5] === " " ? 6 : 5))
      }
      this.onEvent(type, data.join("\n"))
    }
  }
}

/** The server's utime + stime, in clock ticks. */
/** utime + stime of the server and its live descendants (a supervisor's workers). */
function serverTicks(pid) {
  let ticks = 0
  const pending = [pid]
  while (pending.length) {
    const current = pending.pop()
    try {
      const stat = readFileSync(`/proc/${current}/stat`, "latin1")
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      ticks += Number(fields[11]) + Number(fields[12])
      for (const task of readdirSync(`/proc/${current}/task`)) {
        const children = readFileSync(`/proc/${current}/task/${task}/children`, "latin1").trim()
        if (children) pending.push(...children.split(" ").map(Number))
      }
    } catch {
      // it ended meanwhile
    }
  }
  return ticks
}

function serverRss(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "latin1")
  return Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)[1]) * 1024
}

/** Wait until the server has used at most one clock tick over `windowMs`. */
async function serverIdle(pid, windowMs = 250, stepMs = 25, timeoutMs = 30_000) {
  const samples = [serverTicks(pid)]
  const need = Math.ceil(windowMs / stepMs)
  const deadline = now() + timeoutMs
  while (now() < deadline) {
    await sleep(stepMs)
    samples.push(serverTicks(pid))
    if (samples.length > need && samples.at(-1) - samples.at(-1 - need) <= 1) return true
  }
  return false
}

/** Open `n` connections `batch` at a time; `open(i)` resolves when one is ready. */
async function openInBatches(cfg, open, afterBatch = async () => {}) {
  const items = []
  for (let start = 0; start < cfg.n; start += cfg.batch) {
    const size = Math.min(cfg.batch, cfg.n - start)
    const batch = await Promise.all(Array.from({ length: size }, (_, k) => open(start + k)))
    items.push(...batch)
    await afterBatch()
  }
  return items
}

/** RSS once it stops changing (within 0.2% over 250 ms; at most 10 s). */
async function stableRss(pid) {
  let rss = serverRss(pid)
  for (let i = 0; i < 40; i++) {
    await sleep(250)
    const next = serverRss(pid)
    const stable = Math.abs(next - rss) < rss * 0.002
    rss = next
    if (stable) break
  }
  return rss
}

/** Open all cfg.n connections, wait until the server is idle; with cfg.rss, measure it. */
async function openAll(cfg, open, afterBatch) {
  let before = null
  if (cfg.rss) {
    await serverIdle(cfg.server_pid)
    before = serverRss(cfg.server_pid)
  }
  const started = now()
  const items = await openInBatches(cfg, open, afterBatch)
  const opened = { items, open_seconds: (now() - started) / 1000 }
  opened.settled = await serverIdle(cfg.server_pid, 500)
  if (cfg.rss) {
    const after = await stableRss(cfg.server_pid)
    opened.rss = { rss_before: before, rss_after: after, bytes_per_connection: (after - before) / cfg.n }
  }
  return opened
}

/**
 * Plain requests, one at a time, on a keep-alive connection that is replaced
 * when it closed or sat idle long enough for a server to drop it (Node's
 * default keep-alive timeout is 5 s).
 */
class Requester {
  constructor(cfg, maxIdleMs = 2000) {
    Object.assign(this, { cfg, maxIdleMs, conn: null, usedAt: 0 })
  }

  /** Have a fresh-enough connection, connected; call it before timing a request. */
  async ready() {
    if (this.conn && !this.conn.closed && now() - this.usedAt < this.maxIdleMs) return
    this.conn?.close()
    const conn = new Connection(this.cfg.host, this.cfg.port, {
      onResponse: (res) => this.conn === conn && this.answer?.(res),
      onClose: () => this.conn === conn && this.answer?.({ status: 0, headers: {}, body: EMPTY }),
    })
    this.conn = conn
    await conn.connected
  }

  /** Send one request and wait for its response (status 0: the connection closed). */
  async request(method, path, headers = {}, body = null) {
    await this.ready()
    const answered = new Promise((resolve) => (this.answer = resolve))
    await this.conn.send(method, path, headers, body)
    const res = await answered
    this.answer = null
    this.usedAt = now()
    return res
  }
}

function summarise(latencies) {
  const sorted = Float64Array.from(latencies).sort()
  const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null)
  return { samples: sorted.length, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1) }
}

function waitFor(predicate, timeoutMs) {
  return new Promise((resolve) => {
    const deadline = now() + timeoutMs
    const check = () => (predicate() || now() > deadline ? resolve(predicate()) : setTimeout(check, 5))
    check()
  })
}

async function tailOffset(requester, path) {
  const res = await requester.request("HEAD", path)
  if (res.status !== 200) throw new Error(`HEAD ${path}: ${res.status}`)
  return res.headers["stream-next-offset"]
}

const livePath = (path, offset, live) => `${path}?offset=${encodeURIComponent(offset)}&live=${live}`

async function longPoll(cfg) {
  const appender = new Requester(cfg)
  const tail = await tailOffset(appender, cfg.path)
  const latencies = []
  const errors = { bad_status: 0, wrong_body: 0, missing: 0, append_failed: 0 }
  let round = null // { started, expected, answered }
  let lastRound = false
  let timeouts = 0
  const open = async () => {
    const waiter = { offset: tail }
    waiter.conn = new Connection(cfg.host, cfg.port, {
      onResponse: (res) => {
        const answer = round !== null && res.status === 200
        if (res.status === 204) timeouts++ // the server's long-poll timeout: poll again
        else if (!answer) errors.bad_status++
        else {
          latencies.push(now() - round.started)
          if (!res.body.equals(round.expected)) errors.wrong_body++
          round.answered++
        }
        waiter.offset = res.headers["stream-next-offset"] ?? waiter.offset
        const again = res.status === 204 || (answer && !lastRound)
        if (again) waiter.conn.send("GET", livePath(cfg.path, waiter.offset, "long-poll"))
      },
    })
    await waiter.conn.connected
    await waiter.conn.send("GET", livePath(cfg.path, waiter.offset, "long-poll"))
    return waiter
  }
  const opened = await openAll(cfg, open, () => serverIdle(cfg.server_pid, 100))
  const roundMax = []
  let settled = opened.settled
  const roundSeconds = []
  for (let r = 0; r < cfg.rounds; r++) {
    const roundStarted = now()
    settled = (await serverIdle(cfg.server_pid)) && settled
    lastRound = r === cfg.rounds - 1
    const expected = Buffer.alloc(cfg.payload_bytes, `round ${r} `)
    await appender.ready()
    round = { started: now(), expected, answered: 0 }
    const before = latencies.length
    const headers = { "Content-Type": "application/octet-stream" }
    const appended = await appender.request("POST", cfg.path, headers, expected)
    if (appended.status < 200 || appended.status > 299) errors.append_failed++
    await waitFor(() => round.answered >= cfg.n, cfg.timeout_s * 1000)
    errors.missing += cfg.n - round.answered
    roundMax.push(Math.max(...latencies.slice(before)))
    roundSeconds.push((now() - roundStarted) / 1000)
    round = null
  }
  for (const waiter of opened.items) waiter.conn.close()
  return {
    ...summarise(latencies),
    round_max_ms: roundMax,
    round_seconds: roundSeconds,
    errors,
    timeouts,
    open_seconds: opened.open_seconds,
    settled,
    rss: opened.rss,
  }
}

/**
 * One SSE subscriber: checks that messages {n, t} arrive as 0, 1, 2, ... and
 * records each one's latency. When the server ends the response (as servers
 * do every so often) it reconnects from the last control event's offset.
 */
class Subscriber {
  constructor(cfg, offset, latencies) {
    Object.assign(this, { cfg, offset, latencies, next: 0, broken: false, stopped: false })
    this.reconnects = 0
    this.failures = 0 // closes in a row without an event
    this.ready = new Promise((resolve) => (this.becomeReady = resolve))
    this.connect()
  }

  connect() {
    const parser = new SseParser((type, data) => this.event(type, data))
    this.conn = new Connection(this.cfg.host, this.cfg.port, {
      onHead: (res) => {
        if (res.status !== 200) {
          this.broken = true
          this.conn.close()
        }
      },
      onBody: (piece) => parser.feed(piece),
      onResponse: () => this.conn.close(), // the server ended the event stream
      onClose: () => {
        if (this.stopped || this.broken || ++this.failures > 3) {
          this.broken = !this.stopped
          return this.becomeReady()
        }
        this.reconnects++
        this.connect()
      },
    })
    const path = livePath(this.cfg.path, this.offset, "sse")
    this.conn.connected.then(() => this.conn.send("GET", path), () => {})
  }

  event(type, data) {
    if (type === "control") {
      this.offset = JSON.parse(data).streamNextOffset ?? this.offset
      this.failures = 0
      this.becomeReady()
    } else if (type === "data") {
      const at = now()
      for (const line of data.split("\n")) {
        if (!line) continue
        try {
          const message = JSON.parse(line)
          if (message.n !== this.next) this.broken = true
          this.next = message.n + 1
          this.latencies.push(at - message.t)
        } catch {
          this.broken = true
        }
      }
    }
  }

  close() {
    this.stopped = true
    this.conn.close()
  }
}

async function sse(cfg) {
  const appender = new Requester(cfg)
  const tail = await tailOffset(appender, cfg.path)
  let count = 0 // appends sent so far
  const latencies = []
  const subscribers = []
  const open = async () => {
    const sub = new Subscriber(cfg, tail, latencies)
    subscribers.push(sub)
    await sub.ready
  }
  const opened = await openAll(cfg, open)
  // One append at a time, so they land in order: a server too busy to answer
  // within 1/rate gets fewer appends (reported as appends_per_s).
  let appendFailures = 0
  const started = now()
  const end = started + cfg.seconds * 1000
  for (let due = started; due < end; due = Math.max(now(), started + (count * 1000) / cfg.rate)) {
    if (due > now()) await sleep(due - now())
    await appender.ready()
    const body = Buffer.from(`${JSON.stringify({ n: count, t: now() })}\n`)
    const res = await appender.request("POST", cfg.path, { "Content-Type": "text/plain" }, body)
    if (res.status < 200 || res.status > 299) appendFailures++
    count++
  }
  const appendSeconds = Math.max(cfg.seconds, (now() - started) / 1000)
  await waitFor(() => subscribers.every((s) => s.next >= count || s.broken), cfg.timeout_s * 1000)
  const incomplete = subscribers.filter((s) => s.broken || s.next !== count).length
  for (const sub of subscribers) sub.close()
  return {
    ...summarise(latencies),
    messages: count,
    reconnects: subscribers.reduce((sum, sub) => sum + sub.reconnects, 0),
    appends_per_s: count / appendSeconds,
    append_failures: appendFailures,
    incomplete_subscribers: incomplete,
    open_seconds: opened.open_seconds,
    settled: opened.settled,
    rss: opened.rss,
  }
}

const MODES = { longpoll: longPoll, sse }

const cfg = {
  host: "127.0.0.1",
  batch: 200,
  timeout_s: 60,
  ...JSON.parse(process.argv[2] ?? readFileSync(0, "utf8")),
}
const result = await MODES[cfg.mode](cfg)
process.stdout.write(`${JSON.stringify(result)}\n`)
process.exit(0)
