package cluster

import "github.com/redis/go-redis/v9"

// The scripts run atomically inside Redis: no other relay's command runs
// between a script's check and its write, so two relays can never both
// take the last slot. Times are milliseconds on the callers' clocks
// (relays sharing budgets keep their clocks in sync, as for logs).

// reserveScript adds ARGV[3] entries named ARGV[2]:1… with score ARGV[4]
// to every budget key (KEYS[2]…, sorted sets: one member per message or
// recipient, scored by when it counts) if each has room below its limit,
// after dropping entries older than its span. It returns {0, counts…}
// when it reserved, or {retry time, counts…} when it did not, with each
// key's count before; {-1} when KEYS[1], the epoch, is not ARGV[5]: Redis
// lost its data since this relay last looked.
// ARGV: now, id, n, score, epoch, then span and max per budget key.
var reserveScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[5] then return {-1} end
local now, n, score = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4])
local retry, counts = 0, {}
for i = 2, #KEYS do
  local k = KEYS[i]
  local span, max = tonumber(ARGV[2+2*i]), tonumber(ARGV[3+2*i])
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now - span)
  local c = redis.call('ZCARD', k)
  counts[i-1] = c
  if c + n > max and c > 0 then
    local idx = c + n - max - 1
    if idx >= c then idx = c - 1 end
    local e = redis.call('ZRANGE', k, idx, idx, 'WITHSCORES')
    local at = tonumber(e[2]) + span
    if at > retry then retry = at end
  end
end
if retry > 0 then return {retry, unpack(counts)} end
for i = 2, #KEYS do
  local k = KEYS[i]
  local span = tonumber(ARGV[2+2*i])
  for j = 1, n do redis.call('ZADD', k, score, ARGV[2] .. ':' .. j) end
  redis.call('PEXPIRE', k, span + 3600000)
end
return {0, unpack(counts)}
`)

// settleScript moves the first ARGV[3] entries of reservation ARGV[1] to
// time ARGV[2] and removes the rest of its ARGV[4] entries.
var settleScript = redis.NewScript(`
local keep, n = tonumber(ARGV[3]), tonumber(ARGV[4])
for _, k in ipairs(KEYS) do
  for j = 1, n do
    local m = ARGV[1] .. ':' .. j
    if j <= keep then redis.call('ZADD', k, 'XX', ARGV[2], m) else redis.call('ZREM', k, m) end
  end
end
return 1
`)

// leaseScript takes or renews lease ARGV[4] in KEYS[1] until ARGV[1] +
// ARGV[2] if it is held already or fewer than ARGV[3] live leases exist.
// A relay that dies stops renewing, and its leases lapse after the TTL.
var leaseScript = redis.NewScript(`
local now, ttl, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[4]) or redis.call('ZCARD', KEYS[1]) < max then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  return 1
end
return 0
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

// heartbeatScript records node ARGV[2] alive at ARGV[1] and returns how
// many nodes were seen in the last ARGV[3] ms, and the epoch KEYS[2]
// (set to ARGV[4] if missing): a new epoch means Redis lost its data.
var heartbeatScript = redis.NewScript(`
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - 86400000)
redis.call('SET', KEYS[2], ARGV[4], 'NX')
return {redis.call('ZCOUNT', KEYS[1], tonumber(ARGV[1]) - tonumber(ARGV[3]), '+inf'), redis.call('GET', KEYS[2])}
`)

// pingScript is doctor's round trip: it echoes its argument.
var pingScript = redis.NewScript(`return ARGV[1]`)
