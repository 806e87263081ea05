-- Appends: each wrk thread (one connection each) POSTs one body to its own stream.
--   wrk -t32 -c32 -d10s -s append.lua URL -- PATH_PREFIX CONTENT_TYPE BODY_FILE
-- Thread k writes PATH_PREFIX..k; done() prints one "RESULT {json}" line.
local threads = {}

function setup(thread)
   thread:set("index", #threads)
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[3], "rb"))
   wrk.method = "POST"
   wrk.path = args[1] .. index
   wrk.headers["Content-Type"] = args[2]
   wrk.body = file:read("*a")
   file:close()
   non_2xx = 0
end

function response(status)
   if status < 200 or status > 299 then
      non_2xx = non_2xx + 1
   end
end

function done(summary, latency)
   local total_non_2xx = 0
   for _, thread in ipairs(threads) do
      total_non_2xx = total_non_2xx + thread:get("non_2xx")
   end
   local e = summary.errors
   io.write(string.format(
      'RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
      '"p50_us": %d, "p99_us": %d}\n',
      summary.requests, summary.duration, total_non_2xx, e.connect + e.read + e.write + e.timeout,
      latency:percentile(50), latency:percentile(99)))
end
