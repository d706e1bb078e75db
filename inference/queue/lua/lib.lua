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

-- Background work (automatic alt text) waits in a ring of its own, under fairness units
-- named 'bg.<guild>' (keys.background_unit): take.lua serves it only once the interactive
-- ring has nothing more for the worker, and it stays out of the place-in-line index and
-- the ring order below, so an interactive user's place never counts it.
local function is_background(g)
  return string.sub(g, 1, 3) == 'bg.'
end

local function ring_of(g)
  if is_background(g) then return K.background_ring() end
  return K.guild_ring()
end

-- The place-in-line index: a Fenwick tree (in one hash) over how many ring visits each
-- waiting guild needs to drain its queue, d = ceil(queued / weight). Per d it sums the
-- guilds' queued jobs and weights, packed in one integer per field (queued * 2^24 +
-- weight: one HINCRBY per level instead of two), so the jobs all guilds together
-- give in v visits, sum of min(queued, v * weight), is two prefix sums, one HMGET:
-- place lookups cost the same with 10 or 5,000 guilds waiting. Guilds needing more than
-- RANK_SIZE visits count as needing RANK_SIZE (a place past that is "about" anyway).
-- place_guild remembers what each guild put in the tree, so a weight changed meanwhile
-- is taken out exactly as it went in.
local RANK_SIZE = 256
local PACK = 16777216  -- 2^24: the weights of all waiting guilds together stay below it

local function rank_add(i, dq, dw)
  local h, delta = K.place_rank(), dq * PACK + dw
  if delta == 0 then return end
  while i <= RANK_SIZE do
    redis.call('HINCRBY', h, 'n' .. i, delta)
    i = i + bit.band(i, -i)
  end
end

-- Sums of queued jobs and of weights over the guilds that drain within `i` visits.
local function rank_prefix(i)
  if i > RANK_SIZE then i = RANK_SIZE end
  local fields = {}
  while i > 0 do
    table.insert(fields, 'n' .. i)
    i = i - bit.band(i, -i)
  end
  if #fields == 0 then return 0, 0 end
  local packed = 0
  for _, v in ipairs(redis.call('HMGET', K.place_rank(), unpack(fields))) do
    packed = packed + (tonumber(v) or 0)
  end
  local q = math.floor(packed / PACK)  -- exact: integers below 2^53
  return q, packed - q * PACK
end

local function drain_visits(q, w)
  return math.min(RANK_SIZE, math.max(1, math.ceil(q / w)))
end

-- What guild g holds in the tree: {queued, weight}, or nil.
local function ranked(g)
  local rec = redis.call('HGET', K.place_guild(), g)
  if not rec then return nil end
  local q, w = string.match(rec, '^(%d+):(%d+)$')
  if not q then return nil end
  return {tonumber(q), tonumber(w)}
end

local function rerank(g, q)
  local old = ranked(g)
  local w = weight_of(g)
  if old and q > 0 and old[2] == w and drain_visits(old[1], w) == drain_visits(q, w) then
    rank_add(drain_visits(q, w), q - old[1], 0)
  else
    if old then rank_add(drain_visits(old[1], old[2]), -old[1], -old[2]) end
    if q > 0 then rank_add(drain_visits(q, w), q, w) end
  end
  if q > 0 then
    redis.call('HSET', K.place_guild(), g, q .. ':' .. w)
  elseif old then
    redis.call('HDEL', K.place_guild(), g)
  end
end

-- The ring's order, mirrored in a sorted set (guild -> sequence number), so that how many
-- guilds are ahead of one in the ring is a ZRANK, not a walk. Every change to the ring
-- goes through these three.
local function ring_back(g)
  redis.call('ZADD', K.ring_order(), redis.call('INCR', K.ring_seq()), g)
end

local function ring_front(g)
  local head = redis.call('ZRANGE', K.ring_order(), 0, 0, 'WITHSCORES')
  if head[2] then
    redis.call('ZADD', K.ring_order(), tonumber(head[2]) - 1, g)
  else
    ring_back(g)
  end
end

local function ring_drop(g)
  redis.call('ZREM', K.ring_order(), g)
end

-- Keep the per-guild count of queued ids (never below zero: a planted id may be popped),
-- and the place-in-line index with it.
local function count_queued(g, delta)
  local q = redis.call('HINCRBY', K.guild_queued(), g, delta)
  if q <= 0 then
    redis.call('HDEL', K.guild_queued(), g)
    q = 0
  end
  if not is_background(g) then rerank(g, q) end
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
      redis.call(push, ring_of(g), g)
      if is_background(g) then  -- unordered: no place is ever estimated from it
      elseif front then ring_front(g) else ring_back(g) end
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
      redis.call('LREM', ring_of(g), 1, g)
      ring_drop(g)
    end
  end
end

local function drop_lease(jid)
  redis.call('ZREM', K.leases(), jid)
  redis.call('HDEL', K.lease_owner(), jid)
end

-- Release a job's share of the caps, once: field `c` marks a job that was counted, `cu`
-- one counted under its user alone (older versions counted users under guild:user; an
-- older worker settling a new job still releases the rest, see docs/operations.md).
local function uncount(jid)
  local f = redis.call('HMGET', K.job(jid), 'c', 'g', 'u', 'cu')
  if f[1] ~= '1' or not f[2] or not f[3] then return end
  redis.call('HDEL', K.job(jid), 'c', 'cu')
  if redis.call('DECR', K.pending()) <= 0 then redis.call('DEL', K.pending()) end
  if redis.call('HINCRBY', K.guild_pending(), f[2], -1) <= 0 then
    redis.call('HDEL', K.guild_pending(), f[2])
  end
  local uk = f[3]
  if f[4] ~= '1' then uk = f[2] .. ':' .. f[3] end
  if redis.call('HINCRBY', K.user_pending(), uk, -1) <= 0 then
    redis.call('HDEL', K.user_pending(), uk)
  end
end

-- Drop one value of a bounded kind (stash.lua) and its accounts.
local function stash_forget(kind, member)
  local size = tonumber(redis.call('HGET', K.stash_sizes(kind), member) or '0') or 0
  redis.call('HDEL', K.stash_sizes(kind), member)
  redis.call('ZREM', K.stash_index(kind), member)
  redis.call('DEL', K.stash(kind, member))
  if redis.call('DECRBY', K.stash_bytes(kind), size) <= 0 then
    redis.call('DEL', K.stash_bytes(kind))
  end
end

-- Delete a job's hash, giving its picture's bytes back to the budget and its pin on the
-- kept picture back. The picture itself stays for follow-ups, unless the store is over
-- its budget (it was kept past it only because a job needed it): then it goes now, which
-- is what lets a full Redis drain. A version 1 job's own copy of its picture goes too.
local function drop_job(jid)
  local f = redis.call('HMGET', K.job(jid), 'b', 'p')
  local b = tonumber(f[1] or '')
  if b and b > 0 and redis.call('DECRBY', K.queued_bytes(), b) <= 0 then
    redis.call('DEL', K.queued_bytes())
  end
  if f[2] and redis.call('HINCRBY', K.picture_pins(), f[2], -1) <= 0 then
    redis.call('HDEL', K.picture_pins(), f[2])
    local budget = tonumber(redis.call('GET', K.stash_budget('picture')) or '')
    local used = tonumber(redis.call('GET', K.stash_bytes('picture')) or '0') or 0
    if budget and used > budget then stash_forget('picture', f[2]) end
  end
  redis.call('DEL', K.job(jid), K.image(jid))
end

-- Record item i's one outcome in request rid's record; the outcome that completes the
-- request puts one entry naming it on its bot's results stream (trimmed by age, as
-- settle.lua explains). A record gone (expired, or cancelled) takes nothing.
-- Returns 1 if this call recorded the outcome, else 0 (recorded before, or no record).
local function request_outcome(rid, i, result_json, retention_ms)
  local rec = K.request_record(rid)
  local n = tonumber(redis.call('HGET', rec, 'n') or '')
  i = tonumber(i)
  if not n or not i or i < 0 or i >= n then return 0 end
  if redis.call('HSETNX', rec, 'o' .. i, result_json) == 0 then return 0 end
  if redis.call('HINCRBY', rec, 'left', -1) == 0 then
    local to = redis.call('HGET', rec, 'to')
    if not to then return 1 end
    local t = redis.call('TIME')
    local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local stream = K.results(to)
    redis.call('XADD', stream, 'MINID', '~', now_ms - retention_ms, '*', 'q', rid)
    -- A bot instance gone for good leaves no stream behind.
    redis.call('PEXPIRE', stream, retention_ms * 2)
  end
  return 1
end

local function forget(jid)
  drop_lease(jid)
  drop_job(jid)
end

local function queued_in_guild(g)
  return tonumber(redis.call('HGET', K.guild_queued(), g) or '0') or 0
end

-- Estimated place in line (1 = next taken) of the job at 0-based `idx` in user u's line
-- of guild g, under round robin (users ahead of u in the guild's ring get one more turn
-- than those behind), and whether it is exact. Leased jobs are not counted. Within the
-- guild it walks the guild's users (at most MAX_PENDING_PER_GUILD); across guilds it
-- reads the place-in-line index, whatever the number of guilds. Guilds ahead of g in the
-- ring get one visit more than those behind: the index knows how many guilds are ahead
-- (ring_order) but not their queues, so that extra visit is counted in proportion
-- (rounded up: better a place that comes sooner than promised), and the place is "about"
-- unless the guild is first or last in the ring or the extra visit adds nothing.
-- Returns {place, exact (1/0)}.
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
  local own = ranked(g) or {queued_in_guild(g), weight_of(g)}
  local visits = math.floor(ahead_in_guild / own[2])
  local total_q, total_w = rank_prefix(RANK_SIZE)
  -- jobs the other guilds give in v visits each
  local function others(v)
    if v <= 0 then return 0 end
    local q, w = rank_prefix(v)
    return q + v * (total_w - w) - math.min(own[1], v * own[2])
  end
  local low, high = others(visits), others(visits + 1)
  local rank = redis.call('ZRANK', K.ring_order(), g)
  local guilds = redis.call('ZCARD', K.ring_order())
  local share = 0.5  -- not in the index (queued by an older version): the middle
  if rank and guilds > 1 then share = rank / (guilds - 1) end
  local ahead = ahead_in_guild + low + math.ceil((high - low) * share)
  local exact = 0
  if low == high or (rank and (rank == 0 or rank == guilds - 1)) then exact = 1 end
  return {ahead + 1, exact}
end
