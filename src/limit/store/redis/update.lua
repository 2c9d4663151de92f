
-- Update: apply what one response taught, every update in order. After the quotas, ARGV
-- holds the number of updates and 4 fields each: `b` (block until base + a), `r` (quota a
-- has b units remaining, resetting in c, or -1), `l` (quota a's limit is b), `a` (the
-- admission made at base + c counts b more units in quota a; b < 0 gives them back).
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
    elseif x and kind == 'a' then
      local at = base + c
      if x.cal then
        -- The admission's period, on the wall clock as it was then.
        local p = math.floor(math.max(wall + c - margin, 0) / math.max(x.window, 1))
        if p == x.period then
          x.used = math.max(x.used + b, 0)
        end
      elseif at + x.window + margin > now then
        if b > 0 then
          record_before(x, math.min(at, now), b)
        elseif b < 0 then
          refund(x, at, -b)
        end
      end
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
