
-- Acquire: check every quota at once; record the admission if all admit.
-- Returns {0} admitted, {1, delay} admissible `delay` after the clock's now, or
-- {2, quota index from 0, limit} when the cost can never fit.
local q = quotas(6)
local margin = tonumber(ARGV[4])
local base, wall = clock()
local st = state(q)
for i, x in ipairs(q) do
  if x.cost > x.lim then
    return { 2, i - 1, x.lim }
  end
end
local now = advance(q, st, base, wall, margin)
local at = math.max(now, st.blocked)
for _, x in ipairs(q) do
  local t
  if x.cal then
    if x.used + x.cost <= x.lim then
      t = now
    else
      t = boundary(x, now, wall, margin)
    end
  else
    t = earliest(x, now, x.window + margin, x.cost)
  end
  at = math.max(at, t)
end
if at > now then
  save(q, st, now, wall, margin)
  return { 1, at - base }
end
for _, x in ipairs(q) do
  if x.cal then
    x.used = x.used + x.cost
  else
    record(x, now, x.cost)
  end
end
save(q, st, now, wall, margin)
return { 0 }
