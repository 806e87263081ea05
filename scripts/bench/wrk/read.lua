-- Catch-up reads: each connection reads a stream from offset -1 to its tail,
-- following Stream-Next-Offset until Stream-Up-To-Date, then starts again.
--   wrk -t1 -c1 -d5s -s read.lua URL -- STREAM_PATH STREAM_BYTES
-- done() prints one "RESULT {json}" line; a full pass of any other size, or a
-- response other than 200, counts as bad.
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   stream_path = args[1]
   stream_bytes = tonumber(args[2])
   offset = "-1"
   body_bytes, pass_bytes, passes, bad = 0, 0, 0, 0
end

function request()
   return wrk.format("GET", stream_path .. "?offset=" .. offset)
end

function response(status, headers, body)
   if status ~= 200 then
      bad = bad + 1
   end
   body_bytes = body_bytes + #body
   pass_bytes = pass_bytes + #body
   local next_offset, up_to_date
   for name, value in pairs(headers) do
      name = name:lower()
      if name == "stream-next-offset" then
         next_offset = value
      elseif name == "stream-up-to-date" then
         up_to_date = value == "true"
      end
   end
   if up_to_date or not next_offset then
      passes = passes + 1
      if pass_bytes ~= stream_bytes then
         bad = bad + 1
      end
      pass_bytes, offset = 0, "-1"
   else
      offset = next_offset
   end
end

function done(summary)
   local totals = {body_bytes = 0, passes = 0, bad = 0}
   for _, thread in ipairs(threads) do
      for name in pairs(totals) do
         totals[name] = totals[name] + thread:get(name)
      end
   end
   local e = summary.errors
   io.write(string.format(
      'RESULT {"requests": %d, "duration_us": %d, "body_bytes": %d, "passes": %d, ' ..
      '"bad": %d, "socket_errors": %d}\n',
      summary.requests, summary.duration, totals.body_bytes, totals.passes, totals.bad,
      e.connect + e.read + e.write + e.timeout))
end
