-- wrk script for bench/web_latency.py: each request takes the next path of the file $PATHS
-- (one per line), as $METHOD (GET, or POST with the RFC 8058 one-click body). Each of the
-- $THREADS threads starts at its own share of the lines, so that no path is asked twice until a
-- thread has gone through its share. At the end it prints one JSON line with the percentiles in
-- milliseconds.
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
local method = os.getenv("METHOD") or "GET"
local share = math.floor(#paths / tonumber(os.getenv("THREADS")))
local threads = 0

function setup(thread)
  thread:set("start", threads * share)
  threads = threads + 1
end

local n = 0
function request()
  n = n + 1
  local path = paths[(start + n) % #paths + 1]
  if method == "POST" then
    return wrk.format("POST", path, {["Content-Type"] = "application/x-www-form-urlencoded"},
                      "List-Unsubscribe=One-Click")
  end
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50": %.2f, "p99": %.2f, "max": %.2f, "non_2xx": %d, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
