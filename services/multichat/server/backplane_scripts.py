"""The Lua scripts that change the backplane's Redis, each atomic (backplane_codec.py has the
data model they keep).

Why scripts: a room's order must be decided in one place, once. `APPLY` numbers an entry and
appends it in the same step, so two servers posting at once get two consecutive IDs and no
server ever assigns one. Claiming a name and announcing the join, releasing it and announcing
the leave, are one step each too: no reader can see a join for a name that is not taken, and
a member reaped by two servers at once leaves once, because its seat is deleted by whichever
script runs first and the other finds nothing to do.

Each script names every key it touches in KEYS, as Redis Cluster requires, though the
backplane runs on one Redis: a room's keys share a hash tag, `{room}`, but a join also touches
the namespace's `names`, so the scripts would need a cluster-wide name registry to run on a
Cluster. A room is never split; rooms are what one would shard (docs/backplane.md).
"""

from __future__ import annotations

from coredis.commands.script import Script

# Where a room's numbering stands, never behind `floor` (the caller's newest ID for the room):
# after a Redis that lost data (no append-only file, or its last second), a server that has
# seen more carries the numbering on from there, so seq never goes backwards for its members.
_POSITION = """
local function position(log, meta, floor)
  local state = redis.call('HMGET', meta, 'seq', 'sub')
  local seq, sub = tonumber(state[1]), tonumber(state[2] or 0)
  if seq == nil then
    seq, sub = 0, 0
    local newest = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
    if newest then
      local s, n = string.match(newest[1], '^(%d+)-(%d+)$')
      seq, sub = tonumber(s), tonumber(n)
    end
  end
  if floor and (seq < floor[1] or (seq == floor[1] and sub < floor[2])) then
    seq, sub = floor[1], floor[2]
  end
  return seq, sub
end
"""

# KEYS: names, seats (of ARGV[1]'s node), nodes, then each room's log, meta and members.
# ARGV: node, maxlen (0: no cap), then as JSON: the rooms, each [key, floor seq, floor sub],
# and the operations, each [kind, room index, name key, token, arg1, arg2, [fields]] and, for
# a post with a client id, [..., the KEYS index of its seat's `posted` set, the id]; then how
# many ids a `posted` set keeps, and for how many seconds after the last. (JSON,
# because a client pays for every argument it sends, and a batch of messages has thousands:
# one string is the cheapest thing to send, and Redis's cjson reads it back in C.)
#   P publish (arg1 the entry type, arg2 the topic record for a topic, or for a moderate entry
#     the change to the room's bans, mutes or lock); with a key, only for the member holding it
#     under that token ('gone' otherwise)
#   J join (arg1 the name): claims the key ('taken' if held), records the seat, appends
#   L leave: releases the seat named by the token ('gone' if there is none), appends
#   X reap: a leave, only while the node has been silent for arg1 ms ('alive' otherwise)
#   R rename (arg1 the new key, arg2 the new name): claims the new key, releases the old
#   C check: whether the seat still holds its name (after Redis came back); cleans up if not
#   A advance: the room's numbering to the floor, appending nothing
# Returns one {status, seq, id} per operation: status 'ok', 'taken', 'gone' or 'alive'.
APPLY = (
    _POSITION
    + """
local names, seats, nodes = KEYS[1], KEYS[2], KEYS[3]
local node, maxlen = ARGV[1], ARGV[2]
local rooms, floors = {}, {}
for i, room in ipairs(cjson.decode(ARGV[3])) do
  rooms[i] = room[1]
  floors[i] = {room[2], room[3]}
end

local function room_keys(i)
  local b = 1 + 3 * i
  return KEYS[b], KEYS[b + 1], KEYS[b + 2]
end

-- Each room's numbering is read once a batch and written back once at its end.
local numbering = {}

local function numbered(i)
  if not numbering[i] then
    local log, meta = room_keys(i)
    local seq, sub = position(log, meta, floors[i])
    numbering[i] = {seq, sub}
  end
  return numbering[i]
end

local function append(i, message, fields)
  local log = room_keys(i)
  local n = numbered(i)
  if message then n[1], n[2] = n[1] + 1, 0 else n[2] = n[2] + 1 end
  local id = string.format('%d-%d', n[1], n[2])
  if maxlen == '0' then
    redis.call('XADD', log, id, unpack(fields))
  else
    redis.call('XADD', log, 'MAXLEN', '~', maxlen, id, unpack(fields))
  end
  return {'ok', n[1], id}
end

local function release(i, key, token)
  local _, _, members = room_keys(i)
  if redis.call('HGET', names, key) == token then redis.call('HDEL', names, key) end
  local member = redis.call('HGET', members, key)
  if member and cjson.decode(member).token == token then redis.call('HDEL', members, key) end
end

local function leave(i, token, fields)
  local seat = redis.call('HGET', seats, token)
  if not seat then return {'gone', 0, ''} end
  redis.call('HDEL', seats, token)
  release(i, cjson.decode(seat).key, token)
  return append(i, false, fields)
end

local keep, ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local results = {}
for _, op in ipairs(cjson.decode(ARGV[4])) do
  local kind, i, key, token, arg1, arg2, fields = op[1], op[2], op[3], op[4], op[5], op[6], op[7]
  local posted, id = op[8] or 0, op[9]
  local _, meta, members = room_keys(i)
  local result
  local seen = posted > 0 and redis.call('ZSCORE', KEYS[posted], id)
  if kind == 'P' and key ~= '' and redis.call('HGET', names, key) ~= token then
    result = {'gone', 0, ''}
  elseif kind == 'P' and seen then
    result = {'dup', tonumber(seen), ''}
  elseif kind == 'P' then
    result = append(i, arg1 == 'message', fields)
    if posted > 0 then
      redis.call('ZADD', KEYS[posted], result[2], id)
      redis.call('ZREMRANGEBYRANK', KEYS[posted], 0, -(keep + 1))
      redis.call('EXPIRE', KEYS[posted], ttl)
    end
    if arg1 == 'topic' then
      redis.call('HSET', meta, 'topic', arg2)
    elseif arg1 == 'moderate' and arg2 ~= '' then
      local change = cjson.decode(arg2)
      if change[1] == 'ban' then
        redis.call('HSET', meta, 'ban:' .. change[2], change[3])
      elseif change[1] == 'unban' then
        redis.call('HDEL', meta, 'ban:' .. change[2])
      elseif change[1] == 'mute' then
        redis.call('HSET', meta, 'mute:' .. change[2], change[3])
      elseif change[1] == 'unmute' then
        redis.call('HDEL', meta, 'mute:' .. change[2])
      else
        redis.call('HSET', meta, 'locked', change[1] == 'lock' and '1' or '0')
      end
    end
  elseif kind == 'J' then
    if redis.call('HSETNX', names, key, token) == 0 then
      result = {'taken', 0, ''}
    else
      result = append(i, false, fields)
      redis.call('HSET', members, key,
        cjson.encode({name = arg1, node = node, token = token, since = result[3]}))
      redis.call('HSET', seats, token, cjson.encode({room = rooms[i], key = key, name = arg1}))
    end
  elseif kind == 'L' then
    result = leave(i, token, fields)
  elseif kind == 'X' then
    local t = redis.call('TIME')
    local seen = redis.call('HGET', nodes, node)
    if seen and (t[1] * 1000 + math.floor(t[2] / 1000)) - tonumber(seen) < tonumber(arg1) then
      result = {'alive', 0, ''}
    else
      result = leave(i, token, fields)
    end
  elseif kind == 'R' then
    local seat = redis.call('HGET', seats, token)
    if not seat or redis.call('HGET', names, key) ~= token then
      result = {'gone', 0, ''}
    elseif arg1 ~= key and redis.call('HSETNX', names, arg1, token) == 0 then
      result = {'taken', 0, ''}
    else
      if arg1 ~= key then
        redis.call('HDEL', names, key)
        local muted = redis.call('HGET', meta, 'mute:' .. key)  -- a mute goes with its name
        if muted then
          redis.call('HSET', meta, 'mute:' .. arg1, muted)
          redis.call('HDEL', meta, 'mute:' .. key)
        end
      end
      local member = redis.call('HGET', members, key)
      local record = member and cjson.decode(member) or {node = node, token = token, since = ''}
      redis.call('HDEL', members, key)
      record.name = arg2
      redis.call('HSET', members, arg1, cjson.encode(record))
      redis.call('HSET', seats, token, cjson.encode({room = rooms[i], key = arg1, name = arg2}))
      result = append(i, false, fields)
    end
  elseif kind == 'C' then
    if redis.call('HGET', seats, token) and redis.call('HGET', names, key) == token then
      result = {'ok', 0, ''}
    else
      redis.call('HDEL', seats, token)
      release(i, key, token)
      result = {'gone', 0, ''}
    end
  elseif kind == 'A' then
    local n = numbered(i)
    result = {'ok', n[1], string.format('%d-%d', n[1], n[2])}
  else
    return redis.error_reply('unknown backplane operation ' .. tostring(kind))
  end
  results[#results + 1] = result
end
for i, n in pairs(numbering) do
  local _, meta = room_keys(i)
  redis.call('HSET', meta, 'seq', n[1], 'sub', n[2])
end
return results
"""
)

# KEYS: log, meta, members. ARGV: how many of the newest entries.
# Returns {newest entries (newest first), members (flat), seq, sub, topic record, the meta
# hash (flat: its bans, mutes and lock)}: one moment,
# so a server that preloads these and then reads the stream after (seq, sub) misses nothing
# and sees nothing twice.
SNAPSHOT = (
    _POSITION
    + """
local count = tonumber(ARGV[1])
local entries = {}
if count > 0 then entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', count) end
local seq, sub = position(KEYS[1], KEYS[2], nil)
local topic = redis.call('HGET', KEYS[2], 'topic') or ''
return {entries, redis.call('HGETALL', KEYS[3]), seq, sub, topic, redis.call('HGETALL', KEYS[2])}
"""
)

# KEYS: meta. ARGV: field, value, field, value, ...: bans and mutes that have run out. Deletes
# each field still holding that value (not one set again since it was read). Returns how many.
EXPIRED = """
local gone = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    gone = gone + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return gone
"""

# KEYS: log, meta. ARGV: after (a message seq), limit (messages), cap (entries), before (a
# stream ID, exclusive; '' for none) and the newest message before it ('' with none). Returns
# {the newest entries after message `after` and before `before` (newest first, at most `limit`
# messages and `cap` entries), the newest message's seq in that range}.
SINCE = (
    _POSITION
    + """
local after, limit, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local upper, stop = position(KEYS[1], KEYS[2], nil), '+'
if ARGV[4] ~= '' then upper, stop = tonumber(ARGV[5]), '(' .. ARGV[4] end
local start = math.max(after, upper - limit)
local entries = redis.call('XREVRANGE', KEYS[1], stop, string.format('(%d-0', start),
  'COUNT', cap)
return {entries, upper}
"""
)

# KEYS: nodes, epoch, the node's seats. ARGV: node. A heartbeat, in Redis's own time (servers'
# clocks may differ; Redis's is the one every server compares against). Returns {1 if the
# node was not registered (its first beat, or it was forgotten, or Redis lost its data), the
# epoch or false, how many seats Redis holds for it (fewer than it thinks: it was reaped)}.
BEAT = """
local t = redis.call('TIME')
local new = redis.call('HSET', KEYS[1], ARGV[1], t[1] * 1000 + math.floor(t[2] / 1000))
return {new, redis.call('GET', KEYS[2]), redis.call('HLEN', KEYS[3])}
"""

# KEYS: nodes. ARGV: timeout in ms, the asking node. The nodes silent for the timeout.
DEAD = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local seen = redis.call('HGETALL', KEYS[1])
local dead = {}
for k = 1, #seen, 2 do
  if seen[k] ~= ARGV[2] and now - tonumber(seen[k + 1]) >= tonumber(ARGV[1]) then
    dead[#dead + 1] = seen[k]
  end
end
return dead
"""

# KEYS: nodes, the node's seats. ARGV: node, timeout in ms. Forgets a silent node once it has
# no seats left (every member reaped); 1 if it is gone.
FORGET = """
if redis.call('HLEN', KEYS[2]) > 0 then return 0 end
local seen = redis.call('HGET', KEYS[1], ARGV[1])
if not seen then return 1 end
local t = redis.call('TIME')
if (t[1] * 1000 + math.floor(t[2] / 1000)) - tonumber(seen) < tonumber(ARGV[2]) then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""


def _script(source: str) -> Script[str]:
    # Unbound: called with the client to run on (`client=`), each run is an EVALSHA, and a
    # Redis that lost its script cache (every restart) is sent the script again.
    return Script[str](script=source)


apply_script = _script(APPLY)
snapshot_script = _script(SNAPSHOT)
expired_script = _script(EXPIRED)
since_script = _script(SINCE)
beat_script = _script(BEAT)
dead_script = _script(DEAD)
forget_script = _script(FORGET)
