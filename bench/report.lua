-- bench/report.lua — a wrk script (`wrk -s bench/report.lua ...`) that
-- reports the run as one JSON object, for `examples/bench_report.rs`:
--
--   {"duration_us":…,"requests":…,"bytes":…,
--    "errors":{"connect":…,"read":…,"write":…,"status":…,"timeout":…},
--    "latency_us":{"min":…,"mean":…,"max":…,"p50":…,"p90":…,"p99":…,"p999":…}}
--
-- written to the file named by WRK_REPORT, else to stdout after wrk's own
-- text. `errors.status` counts non-2xx/3xx answers. It changes no request:
-- wrk's own (with its -H headers) goes out as without a script.

local function int(n)
  return string.format("%.0f", n)
end

function done(summary, latency, requests)
  local e = summary.errors
  local json = string.format(
    '{"duration_us":%s,"requests":%s,"bytes":%s,'
      .. '"errors":{"connect":%s,"read":%s,"write":%s,"status":%s,"timeout":%s},'
      .. '"latency_us":{"min":%s,"mean":%.2f,"max":%s,"p50":%s,"p90":%s,"p99":%s,"p999":%s}}\n',
    int(summary.duration), int(summary.requests), int(summary.bytes),
    int(e.connect), int(e.read), int(e.write), int(e.status), int(e.timeout),
    int(latency.min), latency.mean, int(latency.max),
    int(latency:percentile(50)), int(latency:percentile(90)),
    int(latency:percentile(99)), int(latency:percentile(99.9)))
  local path = os.getenv("WRK_REPORT")
  if path and #path > 0 then
    local file = assert(io.open(path, "w"))
    file:write(json)
    file:close()
  else
    io.write(json)
  end
end
