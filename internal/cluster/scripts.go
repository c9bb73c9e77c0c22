package cluster

import "github.com/redis/go-redis/v9"

// The scripts run atomically inside Redis: no other relay's command runs
// between a script's check and its write, so two relays can never both
// take the last slot. Times are milliseconds on the callers' clocks
// (relays sharing budgets keep their clocks in sync, as for logs).

// reserveScript takes one reservation's entries in every budget key
// (KEYS[3]…, sorted sets: one member per message or recipient, named
// ARGV[2]:1…, scored by when it counts) if each has room below its limit
// after dropping entries older than its span; otherwise it takes none.
// In the same round trip it reads the mailbox's shared pause (KEYS[2],
// when ARGV[4] is "1"): a paused mailbox reserves nothing.
//
// It returns {status, pause until, pause reason, retry…, count…}: status
// 0 reserved, 1 some key is full (its retry is when it has room, 0 for the
// keys that had), 2 paused; the counts are each key's before. {-1} when
// KEYS[1], the epoch, is not ARGV[3]: Redis lost its data since this
// relay last looked, and must get this relay's counts back first.
// ARGV: now, id, epoch, paused?, then span, max, n, score per budget key.
var reserveScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[3] then return {-1} end
local now = tonumber(ARGV[1])
if ARGV[4] == '1' then
  local p = redis.call('HMGET', KEYS[2], 'until', 'reason')
  local untilms = tonumber(p[1] or '0') or 0
  if untilms > now then return {2, untilms, p[2] or ''} end
end
local full, retries, counts = false, {}, {}
for i = 3, #KEYS do
  local k, a = KEYS[i], 4 * (i - 3) + 5
  local span, max, n = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now - span)
  local c = redis.call('ZCARD', k)
  counts[i-2], retries[i-2] = c, 0
  if c + n > max and c > 0 then
    local idx = c + n - max - 1
    if idx >= c then idx = c - 1 end
    local e = redis.call('ZRANGE', k, idx, idx, 'WITHSCORES')
    retries[i-2] = tonumber(e[2]) + span
    full = true
  end
end
local out = {0, 0, ''}
if full then out[1] = 1 else
  for i = 3, #KEYS do
    local k, a = KEYS[i], 4 * (i - 3) + 5
    local span, n, score = tonumber(ARGV[a]), tonumber(ARGV[a+2]), ARGV[a+3]
    for j = 1, n do redis.call('ZADD', k, score, ARGV[2] .. ':' .. j) end
    redis.call('PEXPIRE', k, span + 3600000)
  end
end
for i = 1, #retries do out[#out+1] = retries[i] end
for i = 1, #counts do out[#out+1] = counts[i] end
return out
`)

// settleScript settles reservation ARGV[1] in every key KEYS[i]: of its n
// entries the first keep move to time `at`, the rest are removed.
// ARGV: id, then n, keep, at per key.
var settleScript = redis.NewScript(`
for i, k in ipairs(KEYS) do
  local a = 3 * (i - 1) + 2
  local n, keep = tonumber(ARGV[a]), tonumber(ARGV[a+1])
  for j = 1, n do
    local m = ARGV[1] .. ':' .. j
    if j <= keep then redis.call('ZADD', k, 'XX', ARGV[a+2], m) else redis.call('ZREM', k, m) end
  end
end
return 1
`)

// leaseScript takes or renews lease ARGV[4] in KEYS[1] until ARGV[1] +
// ARGV[2] if it is held already or fewer than ARGV[3] live leases exist.
// A relay that dies stops renewing, and its leases lapse after the TTL.
// Returns {1 taken or renewed | 0 refused | -1 epoch is not ARGV[5],
// other relays waiting}.
//
// Fairness: a relay refused a lease is noted in KEYS[3] (relay ARGV[6],
// for ARGV[7] ms). While others wait, a relay already holding its fair
// part (the limit over the waiting relays and itself, rounded up) takes
// no new lease, and the answer tells holders how many wait, so that one
// with a backlog gives a connection up rather than keep every slot until
// its queue is empty.
var leaseScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[5] then return {-1, 0} end
local now, ttl, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local node, wantTTL = ARGV[6], tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local others = 0
for _, w in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if w ~= node then others = others + 1 end
end
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  return {1, others}
end
local held = redis.call('ZRANGE', KEYS[1], 0, -1)
local ok = #held < max
if ok and others > 0 then
  local p, mine = node .. ':', 0
  for _, m in ipairs(held) do
    if string.sub(m, 1, #p) == p then mine = mine + 1 end
  end
  if mine >= math.ceil(max / (others + 1)) then ok = false end
end
if ok then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  redis.call('ZREM', KEYS[3], node)
  return {1, others}
end
redis.call('ZADD', KEYS[3], now + wantTTL, node)
redis.call('PEXPIRE', KEYS[3], wantTTL * 2)
return {0, others}
`)

// pauseScript sets KEYS[1] to {until, reason} unless it holds a later
// pause already; it expires with the pause.
var pauseScript = redis.NewScript(`
local cur = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
local untilms = tonumber(ARGV[1])
if untilms > cur then
  redis.call('HSET', KEYS[1], 'until', ARGV[1], 'reason', ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], untilms)
end
return 1
`)

// heartbeatScript records node ARGV[2] alive at ARGV[1], but only when
// KEYS[2], the epoch, is ARGV[4]: a relay whose counts are not in this
// Redis data must join (put them back) first, and its heartbeat is then
// the proof that they are. It returns {1, epoch, count…, node, last beat,
// …}: the count of each long budget KEYS[3]… within its span ARGV[5]…
// (what the fallback divides), then the nodes seen in the last ARGV[3]
// ms; or {0, epoch} without beating.
var heartbeatScript = redis.NewScript(`
local epoch = redis.call('GET', KEYS[2])
if epoch ~= ARGV[4] then return {0, epoch or ''} end
local now = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 86400000)
local out = {1, epoch}
for i = 3, #KEYS do
  out[#out+1] = redis.call('ZCOUNT', KEYS[i], '(' .. (now - tonumber(ARGV[2+i])), '+inf')
end
local alive = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[3]), '+inf', 'WITHSCORES')
for i = 1, #alive do out[#out+1] = alive[i] end
return out
`)

// joinScript ends a join (see Cluster.join), inside the same MULTI as
// the counts it puts back: it makes sure an epoch exists (ARGV[4], when
// none does), beats for node ARGV[2] at ARGV[1], and answers as
// heartbeatScript does.
var joinScript = redis.NewScript(`
redis.call('SET', KEYS[2], ARGV[4], 'NX')
local epoch = redis.call('GET', KEYS[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
local out = {1, epoch}
local alive = redis.call('ZRANGEBYSCORE', KEYS[1], tonumber(ARGV[1]) - tonumber(ARGV[3]), '+inf', 'WITHSCORES')
for i = 1, #alive do out[#out+1] = alive[i] end
return out
`)

// pingScript is doctor's round trip: it echoes its argument.
var pingScript = redis.NewScript(`return ARGV[1]`)
