-- wrk script for bench/apps/djangoproj: cycles through 100 read-only pages
-- (10% home, 20% product list pages, 20% category pages, 50% product detail pages).
local paths = {}
for i = 0, 99 do
  local k = i % 10
  if k == 0 then
    paths[#paths + 1] = "/"
  elseif k <= 2 then
    paths[#paths + 1] = "/products/?page=" .. tostring((i * 7) % 80 + 1)
  elseif k <= 4 then
    paths[#paths + 1] = string.format("/category/cat-%02d/", (i * 5) % 24)
  else
    paths[#paths + 1] = "/product/" .. tostring((i * 389) % 4000 + 1) .. "/"
  end
end

local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end
