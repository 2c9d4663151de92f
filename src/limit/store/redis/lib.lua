-- tower-quota: the window algorithm of `src/limit/window.rs`, for one key, in Redis.
--
-- Shared by the acquire, update and snapshot scripts (each is this file followed by its own
-- body). Every time is in microseconds (a Lua number is a double: whole microseconds since
-- the Unix epoch are exact, nanoseconds would not be).
--
-- KEYS[1]     a hash: `t` the latest time seen, `b` blocked until, and per quota id
--             `<id>:u` units used, `<id>:p` the calendar period counted, `<id>:l` a learned
--             limit.
-- KEYS[1 + i] quota i's rolling log, a list of entries oldest first, each
--             `last[:cost[:first]]` (cost 1 and first = last are left out).
-- ARGV        1 the clock (`1`: Redis's TIME; `0`: the next two), 2 now, 3 wall, 4 margin,
--             5 the number of quotas n, then per quota: id, limit, window, calendar (0/1),
--             granularity, and in the acquire script the cost.

local function fmt(x)
  return string.format('%.0f', x)
end

-- An entry: first, last, cost.
local function parse(e)
  local i = string.find(e, ':', 1, true)
  if not i then
    local t = tonumber(e)
    return t, t, 1
  end
  local last = tonumber(string.sub(e, 1, i - 1))
  local j = string.find(e, ':', i + 1, true)
  if not j then
    return last, last, tonumber(string.sub(e, i + 1))
  end
  return tonumber(string.sub(e, j + 1)), last, tonumber(string.sub(e, i + 1, j - 1))
end

local function entry(first, last, cost)
  if first == last then
    if cost == 1 then
      return fmt(last)
    end
    return fmt(last) .. ':' .. fmt(cost)
  end
  return fmt(last) .. ':' .. fmt(cost) .. ':' .. fmt(first)
end

-- The clock the decision is made on: (now, wall).
local function clock()
  if ARGV[1] == '1' then
    local t = redis.call('TIME')
    local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
    return us, us
  end
  return tonumber(ARGV[2]), tonumber(ARGV[3])
end

-- The quotas, from ARGV[6] on, `stride` fields each.
local function quotas(stride)
  local q = {}
  for i = 1, tonumber(ARGV[5]) do
    local b = 6 + (i - 1) * stride
    q[i] = {
      id = ARGV[b],
      limit = tonumber(ARGV[b + 1]),
      window = tonumber(ARGV[b + 2]),
      cal = ARGV[b + 3] == '1',
      g = tonumber(ARGV[b + 4]),
      cost = tonumber(ARGV[b + 5]),
      log = KEYS[i + 1],
    }
  end
  return q
end

-- The key's state: reads the hash once.
local function state(q)
  local fields = { 'b', 't' }
  for _, x in ipairs(q) do
    fields[#fields + 1] = x.id .. ':u'
    fields[#fields + 1] = x.id .. ':p'
    fields[#fields + 1] = x.id .. ':l'
  end
  local v = redis.call('HMGET', KEYS[1], unpack(fields))
  local st = { blocked = tonumber(v[1]) or 0, last = tonumber(v[2]) or 0 }
  for i, x in ipairs(q) do
    local b = 2 + (i - 1) * 3
    x.used = tonumber(v[b + 1])
    x.period = tonumber(v[b + 2]) or 0
    x.learned = tonumber(v[b + 3])
    x.lim = x.learned or x.limit
  end
  return st
end

-- Drops the entries that no longer count at `now`. A missing count (the hash expired before
-- the log) is summed from the log.
local function purge(x, now, window)
  local used = x.used
  while true do
    local e = redis.call('LINDEX', x.log, 0)
    if not e then
      used = 0
      break
    end
    local _, last, cost = parse(e)
    if last + window > now then
      break
    end
    redis.call('LPOP', x.log)
    if used then
      used = used - cost
    end
  end
  if not used then
    used = 0
    for _, e in ipairs(redis.call('LRANGE', x.log, 0, -1)) do
      local _, _, cost = parse(e)
      used = used + cost
    end
  end
  x.used = used
end

-- The earliest time >= now at which `cost` more units fit (a purged log, cost <= limit).
local function earliest(x, now, window, cost)
  local total = x.used + cost
  if total <= x.lim then
    return now
  end
  local excess = total - x.lim
  local from, n = 0, 8
  while true do
    local es = redis.call('LRANGE', x.log, from, from + n - 1)
    if #es == 0 then
      return now
    end
    for _, e in ipairs(es) do
      local _, last, c = parse(e)
      if c >= excess then
        return math.max(last + window, now)
      end
      excess = excess - c
    end
    from = from + n
    n = n * 4
  end
end

local function record(x, now, cost)
  if cost == 0 then
    return
  end
  x.used = x.used + cost
  local back = redis.call('LINDEX', x.log, -1)
  if back then
    local first, last, c = parse(back)
    if now == last or (x.g > 0 and now - first < x.g) then
      redis.call('LSET', x.log, -1, entry(first, math.max(last, now), c + cost))
      return
    end
  end
  redis.call('RPUSH', x.log, entry(now, now, cost))
end

-- Records `cost` units as if admitted at `at <= now`, keeping the log in time order.
local function record_before(x, at, cost)
  local back = redis.call('LINDEX', x.log, -1)
  if back then
    local _, last = parse(back)
    if last > at then
      x.used = x.used + cost
      for _, e in ipairs(redis.call('LRANGE', x.log, 0, -1)) do
        local _, l = parse(e)
        if l > at then
          redis.call('LINSERT', x.log, 'BEFORE', e, entry(at, at, cost))
          return
        end
      end
    end
  end
  record(x, at, cost)
end

-- Gives back up to `units` of the admission made at `at`: from the newest entry that began at
-- or before it.
local function refund(x, at, units)
  local entries = redis.call('LRANGE', x.log, 0, -1)
  for i = #entries, 1, -1 do
    local first, last, cost = parse(entries[i])
    if first <= at then
      local taken = math.min(cost, units)
      x.used = math.max((x.used or 0) - taken, 0)
      if cost == taken then
        redis.call('LSET', x.log, i - 1, '-')
        redis.call('LREM', x.log, 1, '-')
      else
        redis.call('LSET', x.log, i - 1, entry(first, last, cost - taken))
      end
      return
    end
  end
end

-- Moves a calendar count to the period `wall - margin` falls in.
local function roll(x, wall, margin)
  local p = math.floor(math.max(wall - margin, 0) / math.max(x.window, 1))
  if x.used == nil then
    x.used = 0
  end
  if p > x.period then
    x.period = p
    x.used = 0
  end
end

-- When the calendar period ends (plus the margin), in `now`'s timeline.
local function boundary(x, now, wall, margin)
  return now + math.max((x.period + 1) * x.window + margin - wall, 0)
end

-- Brings every window to `now` (time never goes backwards within a key).
local function advance(q, st, now, wall, margin)
  now = math.max(now, st.last)
  st.last = now
  for _, x in ipairs(q) do
    if x.cal then
      roll(x, wall, margin)
    else
      purge(x, now, x.window + margin)
    end
  end
  return now
end

-- Writes the state back and sets every key to expire once the state no longer matters.
local function save(q, st, now, wall, margin)
  local h = { 't', fmt(st.last), 'b', fmt(st.blocked) }
  local idle = st.blocked
  for _, x in ipairs(q) do
    -- Kept as long as the largest margin a limiter could learn before the next use would
    -- count it (a twentieth of the window, at most 2 s: `keep_margin` in window.rs).
    local keep = math.max(margin, math.min(math.floor(x.window / 20), 2000000))
    local window = x.window + keep
    h[#h + 1] = x.id .. ':u'
    h[#h + 1] = fmt(x.used)
    if x.cal then
      h[#h + 1] = x.id .. ':p'
      h[#h + 1] = fmt(x.period)
      if x.used > 0 or x.learned then
        idle = math.max(idle, boundary(x, now, wall, keep))
      end
    else
      if x.used > 0 then
        idle = math.max(idle, now + window)
      end
      if x.learned then
        idle = math.max(idle, math.max(now, st.blocked) + window)
      end
    end
    if x.learned then
      h[#h + 1] = x.id .. ':l'
      h[#h + 1] = fmt(x.learned)
    end
  end
  redis.call('HSET', KEYS[1], unpack(h))
  local ms = math.ceil(math.max(idle - now, 0) / 1000) + 1000
  -- Never shorter than it was: the fields of quotas this tier does not name (another tier of
  -- the key: a pace that ended, a learned quota) count until then.
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > ms then
    ms = ttl
  end
  redis.call('PEXPIRE', KEYS[1], ms)
  for _, x in ipairs(q) do
    -- An empty log is no key at all.
    if not x.cal and x.used > 0 then
      redis.call('PEXPIRE', x.log, ms)
    end
  end
end
