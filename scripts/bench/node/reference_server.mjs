// The Node reference server (@durable-streams/server) as a benchmark target.
//
//   node reference_server.mjs [--data-dir DIR] [--long-poll-timeout-ms MS]
//
// Listens on 127.0.0.1 on a free port, prints "reference server at URL" once
// it is ready, and stops cleanly on SIGTERM or SIGINT.
import { parseArgs } from "node:util"
import { DurableStreamTestServer } from "@durable-streams/server"

const { values } = parseArgs({
  options: {
    "data-dir": { type: "string" },
    "long-poll-timeout-ms": { type: "string", default: "60000" },
  },
})

const server = new DurableStreamTestServer({
  host: "127.0.0.1",
  port: 0,
  longPollTimeout: Number(values["long-poll-timeout-ms"]),
  dataDir: values["data-dir"],
})

const url = await server.start()
console.log(`reference server at ${url}`)

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  await server.stop()
  process.exit(0)
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
