-- Charge `n` images to a guild's daily quota, atomically: two requests racing for the last
-- images of a quota cannot both get them. (The bot's abuse limit, kept with the queue's
-- scripts so that every Redis key and script lives in one place.)
-- ARGV: prefix, guild (or 'dm'), day (YYYY-MM-DD, UTC), n, quota, ttl_s
-- Returns the new total, or -1 when `n` more would exceed the quota.
local key = K.daily_usage(ARGV[2], ARGV[3])
local used = tonumber(redis.call('GET', key) or '0') or 0
local n = tonumber(ARGV[4])
if used + n > tonumber(ARGV[5]) then return -1 end
local total = redis.call('INCRBY', key, n)
redis.call('EXPIRE', key, tonumber(ARGV[6]))
return total
