-- wrk script for graphite-web (bench/apps/graphite): 100 requests of what dashboards and
-- Grafana-style clients send, rotated: 50% /render JSON (single series, wildcards, functions),
-- 10% /render PNG (cairo), 20% /metrics/find and /metrics/expand, 10% dashboards (find, load),
-- 5% events, 5% pages (composer, dashboard UI, version, browser header). Not /functions: graphite-web
-- 1.1.8 (bookworm) answers it 500 on Python 3.11 (inspect.getargspec is gone).
local paths = {}
local function host(i) return string.format("host%02d", (i * 7) % 40) end
local json_targets = {
  function(i) return "servers." .. host(i) .. ".cpu.0.user&from=-1h" end,
  function(i) return "sumSeries(servers.*.load.1)&from=-6h" end,
  function(i) return "aliasByNode(servers.host1*.memory.used,1)&from=-1d" end,
  function(i) return "movingAverage(servers." .. host(i) .. ".network.eth0.rx,10)&from=-3h" end,
  function(i) return "averageSeries(servers." .. host(i) .. ".cpu.*.idle)&from=-12h" end,
  function(i) return "highestMax(servers.*.apps.web.p99,5)&from=-2h" end,
  function(i) return "scale(nonNegativeDerivative(servers." .. host(i) .. ".disk.sda.reads),0.5)&from=-6h" end,
  function(i) return "asPercent(servers." .. host(i) .. ".memory.used,servers." .. host(i) .. ".memory.free)&from=-1h" end,
  function(i) return "summarize(servers." .. host(i) .. ".apps.api.requests,'1h','sum')&from=-1d" end,
  function(i) return "groupByNode(servers.*.cpu.*.user,1,'sumSeries')&from=-1h" end,
}
for i = 0, 99 do
  local k = i % 20
  if k < 10 then
    paths[#paths + 1] = "/render?format=json&target=" .. json_targets[(i % 10) + 1](i)
  elseif k < 12 then
    paths[#paths + 1] = "/render?width=600&height=300&target=servers." .. host(i) .. ".load.*&from=-6h"
  elseif k < 14 then
    paths[#paths + 1] = "/metrics/find?query=servers." .. host(i) .. ".*"
  elseif k == 14 then
    paths[#paths + 1] = "/metrics/find?query=servers.host1*.cpu.*"
  elseif k == 15 then
    paths[#paths + 1] = "/metrics/expand?query=servers." .. host(i) .. ".disk.*.*&leavesOnly=1"
  elseif k == 16 then
    paths[#paths + 1] = "/dashboard/load/team-" .. string.format("%02d", i % 30)
  elseif k == 17 then
    paths[#paths + 1] = "/dashboard/find?query=team"
  elseif k == 18 then
    paths[#paths + 1] = "/events/get_data?from=-6h&until=now"
  else
    local pages = {"/composer/", "/dashboard/", "/version/", "/browser/header"}
    paths[#paths + 1] = pages[(i // 20) % #pages + 1]
  end
end

local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end

