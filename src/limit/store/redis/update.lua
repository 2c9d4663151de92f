
-- Update: apply what one response taught, every update in order. After the quotas, ARGV
-- holds the number of updates and 4 fields each: `b` (block until base + a), `r` (quota a
-- has b units remaining, resetting in c, or -1), `l` (quota a's limit is b).
local q = quotas(5)
local margin = tonumber(ARGV[4])
local base, wall = clock()
local st = state(q)
local now = advance(q, st, base, wall, margin)
local u = 6 + #q * 5
for k = 1, tonumber(ARGV[u]) do
  local o = u + 1 + (k - 1) * 4
  local kind, a, b, c = ARGV[o], tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3])
  if k > 1 then
    -- As the in-memory store does: every update sees the windows brought to now.
    now = advance(q, st, base, wall, margin)
  end
  if kind == 'b' then
    st.blocked = math.max(st.blocked, base + a)
  else
    local x = q[a + 1]
    if x and kind == 'l' then
      x.learned = b
      x.lim = b
    elseif x and kind == 'r' then
      local left = math.max(x.lim - x.used, 0)
      if b < left then
        if x.cal then
          x.used = x.used + left - b
        else
          local window = x.window + margin
          local at = now
          if c >= 0 then
            at = math.min(math.max(now + c + margin - window, 0), now)
          end
          record_before(x, at, left - b)
        end
      end
    end
  end
end
save(q, st, now, wall, margin)
return { 1 }
