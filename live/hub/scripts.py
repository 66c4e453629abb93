"""The Lua scripts of live sessions: each touches the keys of one session (one hash slot)."""

from __future__ import annotations

# The one way an event enters a session: next seq, history entry, pub/sub message.
PUBLISH_FN = """
-- cmd is SPUBLISH (sharded pub/sub) or PUBLISH, as the server allows.
local function publish(seq_key, history_key, rest, ts, maxlen, chan, cmd)
  local seq = redis.call('INCR', seq_key)
  local data = '{"seq":' .. seq .. ',"ts":' .. ts .. ',' .. rest
  redis.call('XADD', history_key, 'MAXLEN', maxlen, seq .. '-0', 'd', data)
  redis.call(cmd, chan, data)
  return seq
end
"""


# One event, or several with consecutive seqs (every process reads them together and writes
# them to each viewer in one send). ARGV as for one ``publish``, then the rest of each
# further event.
PUBLISH = PUBLISH_FN + """
local seq = publish(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
for i = 6, #ARGV do
  seq = publish(KEYS[1], KEYS[2], ARGV[i], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
end
return seq
"""


# Pin and unpin check the session, change the pins and publish in one step, so a pin is
# never shown without its event nor after the session ended.
PIN = PUBLISH_FN + """
if redis.call('HGET', KEYS[3], 'state') ~= 'live' then return -3 end
local items = redis.call('LRANGE', KEYS[4], 0, -1)
for _, item in ipairs(items) do
  if cjson.decode(item)['sku'] == ARGV[7] then return -2 end
end
if #items >= tonumber(ARGV[8]) then return -1 end
redis.call('RPUSH', KEYS[4], ARGV[6])
return publish(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
"""


UNPIN = PUBLISH_FN + """
if redis.call('HGET', KEYS[3], 'state') ~= 'live' then return -3 end
local items = redis.call('LRANGE', KEYS[4], 0, -1)
for i = #items, 1, -1 do
  local sku = cjson.decode(items[i])['sku']
  if ARGV[6] == '' or sku == ARGV[6] then
    redis.call('LREM', KEYS[4], 1, items[i])
    local rest = '"type":"unpinned","sku":' .. cjson.encode(sku) .. '}'
    return publish(KEYS[1], KEYS[2], rest, ARGV[2], ARGV[3], ARGV[4], ARGV[5])
  end
end
return -1
"""


REMOVE_BY_FIELD = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
for i = #items, 1, -1 do
  local item = items[i]
  if ARGV[2] == '' or cjson.decode(item)[ARGV[1]] == ARGV[2] then
    redis.call('LREM', KEYS[1], 1, item)
    return item
  end
end
return false
"""


DRAIN = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return false end
local values = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return values
"""


# The values of KEYS[1] not already shown (ARGV: ttl in seconds, then key/value pairs),
# each recorded as shown: flushes of a pair never overlap, so this is compare-and-set.
UNSHOWN = """
local out = {}
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    out[#out + 1] = ARGV[i]
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return out
"""
