-- Helpers shared by every queue script; the generated key builders (`K`) and protocol
-- words (`E`, `State`, `Submit`, `Cancel`) are prepended by inference/queue/scripts.py.
--
-- Invariants kept by every script:
--   * a user id is in guild_users(g) iff user_queue(g, u) is non-empty;
--   * a guild id is in guild_ring iff guild_users(g) is non-empty;
--   * a job id is in leases iff some worker (or the reaper) holds it.
-- Time comes from the Redis server (TIME), so workers on machines with skewed clocks
-- still agree on when a lease lapses.

local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt(x)
  return string.format('%.6f', x)
end

local function weight_of(g)
  local w = tonumber(redis.call('HGET', K.weights(), g) or '1') or 1
  if w < 1 then return 1 end
  return math.floor(w)
end

-- Wake one blocked worker. The list is capped: a few stale tokens cost a worker one
-- empty dispatch each, an unbounded list would cost memory.
local function wake()
  redis.call('LPUSH', K.wakeup(), '1')
  redis.call('LTRIM', K.wakeup(), 0, 15)
end

-- Keep the per-guild count of queued ids (never below zero: a planted id may be popped).
local function count_queued(g, delta)
  if redis.call('HINCRBY', K.guild_queued(), g, delta) <= 0 then
    redis.call('HDEL', K.guild_queued(), g)
  end
end

-- Put a job id in its user's line: at the back (a new job) or at the front (a job handed
-- back or reaped: it already waited its turn once, so it goes first in its user's line,
-- its user first in the guild and, if the guild had nothing queued, its guild first in
-- the ring).
local function enqueue(jid, g, u, front)
  local push = 'RPUSH'
  if front then push = 'LPUSH' end
  count_queued(g, 1)
  if redis.call(push, K.user_queue(g, u), jid) == 1 then
    if redis.call(push, K.guild_users(g), u) == 1 then
      redis.call(push, K.guild_ring(), g)
    end
  end
end

-- Move a job's attempt counter by `delta`. A planted non-number counts as 0: HINCRBY
-- would fail the script on every take, for every worker, and the line would never move.
local function bump_attempt(jid, delta)
  local a = math.floor(tonumber(redis.call('HGET', K.job(jid), 'a')) or 0) + delta
  redis.call('HSET', K.job(jid), 'a', a)
  return a
end

-- Remove a job id from anywhere in its user's line, keeping the ring invariants.
local function unqueue(jid, g, u)
  local uq = K.user_queue(g, u)
  if redis.call('LREM', uq, 1, jid) > 0 then count_queued(g, -1) end
  if redis.call('LLEN', uq) == 0 then
    local gu = K.guild_users(g)
    redis.call('LREM', gu, 1, u)
    if redis.call('LLEN', gu) == 0 then
      redis.call('LREM', K.guild_ring(), 1, g)
    end
  end
end

local function drop_lease(jid)
  redis.call('ZREM', K.leases(), jid)
  redis.call('HDEL', K.lease_owner(), jid)
end

-- Release a job's share of the caps, once: field `c` marks a job that was counted, and
-- how: 2 under its user alone, 1 (older versions) under guild:user.
local function uncount(jid)
  local f = redis.call('HMGET', K.job(jid), 'c', 'g', 'u')
  if (f[1] ~= '1' and f[1] ~= '2') or not f[2] or not f[3] then return end
  redis.call('HDEL', K.job(jid), 'c')
  if redis.call('DECR', K.pending()) <= 0 then redis.call('DEL', K.pending()) end
  if redis.call('HINCRBY', K.guild_pending(), f[2], -1) <= 0 then
    redis.call('HDEL', K.guild_pending(), f[2])
  end
  local uk = f[3]
  if f[1] == '1' then uk = f[2] .. ':' .. f[3] end
  if redis.call('HINCRBY', K.user_pending(), uk, -1) <= 0 then
    redis.call('HDEL', K.user_pending(), uk)
  end
end

local function forget(jid)
  drop_lease(jid)
  redis.call('DEL', K.job(jid), K.image(jid))
end

local function queued_in_guild(g)
  return tonumber(redis.call('HGET', K.guild_queued(), g) or '0') or 0
end

-- Estimated place in line (1 = next taken) of the job at 0-based `idx` in user u's line
-- of guild g, under round robin (users ahead of u in the guild's ring get one more turn
-- than those behind). Leased jobs are not counted. O(users in g + active guilds).
local function place_of(g, u, idx)
  local ahead_in_guild = idx
  local seen = false
  for _, other in ipairs(redis.call('LRANGE', K.guild_users(g), 0, -1)) do
    if other == u then
      seen = true
    else
      local turns = idx + 1
      if seen then turns = idx end
      ahead_in_guild = ahead_in_guild + math.min(redis.call('LLEN', K.user_queue(g, other)), turns)
    end
  end
  local visits = math.floor(ahead_in_guild / weight_of(g))
  local ahead = ahead_in_guild
  seen = false
  for _, og in ipairs(redis.call('LRANGE', K.guild_ring(), 0, -1)) do
    if og == g then
      seen = true
    else
      local v = visits + 1
      if seen then v = visits end
      ahead = ahead + math.min(queued_in_guild(og), v * weight_of(og))
    end
  end
  return ahead + 1
end
