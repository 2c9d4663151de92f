
-- Snapshot (read-only): {0} when nothing is held, else {1, the clock's now, blocked until,
-- n, then per quota: limit, used, next free (-1: never)}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 0 }
end
local q = quotas(5)
local margin = tonumber(ARGV[4])
local base, wall = clock()
local st = state(q)
local now = math.max(base, st.last)
local out = { 1, base, st.blocked, #q }
for _, x in ipairs(q) do
  local used, next_free
  if x.cal then
    local p = math.floor(math.max(wall - margin, 0) / math.max(x.window, 1))
    used = x.used or 0
    if p > x.period then
      x.period = p
      used = 0
    end
    if used < x.lim then
      next_free = now
    else
      next_free = boundary(x, now, wall, margin)
    end
  else
    local window = x.window + margin
    local live = {}
    used = 0
    for _, e in ipairs(redis.call('LRANGE', x.log, 0, -1)) do
      local _, last, c = parse(e)
      if last + window > now then
        live[#live + 1] = { last, c }
        used = used + c
      end
    end
    if x.lim == 0 then
      next_free = -1
    elseif used + 1 <= x.lim then
      next_free = now
    else
      local excess = used + 1 - x.lim
      next_free = now
      for _, e in ipairs(live) do
        if e[2] >= excess then
          next_free = math.max(e[1] + window, now)
          break
        end
        excess = excess - e[2]
      end
    end
  end
  if next_free ~= -1 then
    next_free = math.max(next_free, st.blocked)
  end
  out[#out + 1] = x.lim
  out[#out + 1] = used
  out[#out + 1] = next_free
end
return out
