-- Charge `n` images to daily quotas, atomically and all or nothing: a guild's and its
-- person's own (in DMs the person's only). Two requests racing for the last images of a
-- quota cannot both get them. (The bot's abuse limit, kept with the queue's scripts so
-- that every Redis key and script lives in one place.)
-- ARGV: prefix, day (YYYY-MM-DD, UTC), n, ttl_s, scope, quota[, scope, quota]...
-- Returns the first scope's new total, or -i when `n` more would exceed the i-th quota
-- (nothing charged). A negative `n` is a refund of that day's charge: it never takes a
-- counter below zero, nor recreates one that has expired.
local day, n, ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if n > 0 then
  for i = 5, #ARGV, 2 do
    local used = tonumber(redis.call('GET', K.daily_usage(ARGV[i], day)) or '0') or 0
    if used + n > tonumber(ARGV[i + 1]) then return -((i - 3) / 2) end
  end
end
local first = 0
for i = #ARGV - 1, 5, -2 do
  local key = K.daily_usage(ARGV[i], day)
  local total = 0
  if n > 0 then
    total = redis.call('INCRBY', key, n)
    redis.call('EXPIRE', key, ttl)
  elseif redis.call('EXISTS', key) == 1 then
    total = math.max(0, redis.call('INCRBY', key, n))
    redis.call('SET', key, total, 'KEEPTTL')
  end
  first = total
end
return first
