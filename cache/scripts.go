package cache

// The Lua scripts below are the only code that writes entries and markers.
// Positions and epoch IDs are 8-byte big-endian strings; Lua numbers are
// doubles, so positions are compared as two exact 32-bit halves (string
// comparison in Redis's Lua follows the server's collation locale and is not
// used). Entries start with the header of appendHeader: byte 1 is the format,
// bytes 2..9 the epoch, 10..17 the position, 18 the flags.

const luaHelpers = `
local function hilo(s, i)
  local a, b, c, d, e, f, g, h = string.byte(s, i, i + 7)
  return ((a * 256 + b) * 256 + c) * 256 + d, ((e * 256 + f) * 256 + g) * 256 + h
end
local function gt(ah, al, bh, bl)
  return ah > bh or (ah == bh and al > bl)
end
`

// A shard's epoch value is an 8-byte random ID followed by the decimal
// Redis-server time in ms at which the epoch was created. Creation time is
// taken from Redis itself (TIME inside the script that writes the epoch), so
// that it can never be earlier than the actual creation, whatever the
// clients' clocks or however long a command waited to be executed.
const luaNow = `
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// readLua returns {epoch, now, entry, watermark}, now being the server time
// in ms; entry is false unless there is a current entry, watermark is false
// unless the shard has one for the current epoch (8 bytes). It creates the
// shard's epoch with the ID ARGV[1] (fresh and random) when it is missing,
// which is what happens after Redis lost its data: fills that saw the old
// epoch are then refused by fillLua. An entry is returned only if it carries
// the current epoch's ID and was filled at a position above the key's
// marker.
//
// KEYS: epoch, marker, entry, watermark. ARGV: candidate epoch ID.
const readLua = luaHelpers + luaNow + `
local ep = redis.call('GET', KEYS[1])
if not ep or string.len(ep) < 9 then
  ep = ARGV[1] .. string.format('%.0f', now)
  redis.call('SET', KEYS[1], ep)
end
local wm = redis.call('GET', KEYS[4])
if not wm or string.len(wm) ~= 16 or string.sub(wm, 1, 8) ~= string.sub(ep, 1, 8) then
  wm = false
else
  wm = string.sub(wm, 9, 16)
end
local v = redis.call('GET', KEYS[3])
if not v then return {ep, now, false, wm} end
if string.len(v) < 18 or string.sub(v, 2, 9) ~= string.sub(ep, 1, 8) then return {ep, now, false, wm} end
local m = redis.call('GET', KEYS[2])
if m then
  local ph, pl = hilo(v, 10)
  local mh, ml = hilo(m, 1)
  if not gt(ph, pl, mh, ml) then return {ep, now, false, wm} end
end
return {ep, now, v, wm}
`

// setWatermarkLua raises the shard's watermark to ARGV[1] (8 bytes) under
// its current epoch. A watermark of another epoch is replaced; nothing is
// written when the shard has no epoch (nothing can be cached in it yet).
// Returns 1 when the watermark was raised.
//
// KEYS: epoch, watermark. ARGV: position.
const setWatermarkLua = luaHelpers + `
local ep = redis.call('GET', KEYS[1])
if not ep or string.len(ep) < 9 then return 0 end
ep = string.sub(ep, 1, 8)
local cur = redis.call('GET', KEYS[2])
if cur and string.len(cur) == 16 and string.sub(cur, 1, 8) == ep then
  local ch, cl = hilo(cur, 9)
  local wh, wl = hilo(ARGV[1], 1)
  if not gt(wh, wl, ch, cl) then return 0 end
end
redis.call('SET', KEYS[2], ep .. ARGV[1])
return 1
`

// setEpochLua gives a shard a new epoch with ID ARGV[1].
//
// KEYS: epoch. ARGV: epoch ID.
const setEpochLua = luaNow + `
redis.call('SET', KEYS[1], ARGV[1] .. string.format('%.0f', now))
return 1
`

// Results of fillLua.
const (
	fillStored     = 1
	fillEpoch      = 2 // the epoch changed (or vanished) since the load began
	fillStale      = 3 // position not above the key's invalidation marker
	fillSuperseded = 4 // a current entry at the same or a later position exists
)

// fillLua stores an entry only if the epoch ID the filler saw before loading
// is still current, the data's position is above the key's invalidation marker,
// and no entry of the current epoch at the same or a later position exists.
//
// KEYS: epoch, marker, entry. ARGV: epoch ID, position, entry bytes, TTL in ms.
const fillLua = luaHelpers + `
local ep = redis.call('GET', KEYS[1])
if not ep or string.sub(ep, 1, 8) ~= ARGV[1] then return 2 end
ep = ARGV[1]
local ph, pl = hilo(ARGV[2], 1)
local m = redis.call('GET', KEYS[2])
if m then
  local mh, ml = hilo(m, 1)
  if not gt(ph, pl, mh, ml) then return 3 end
end
local cur = redis.call('GET', KEYS[3])
if cur and string.len(cur) >= 18 and string.sub(cur, 2, 9) == ep then
  local ch, cl = hilo(cur, 10)
  if not gt(ph, pl, ch, cl) then return 4 end
end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
return 1
`

// invalidateLua raises each key's marker to the position (max) with a fresh
// TTL, and deletes the key's entry unless it was filled above the position
// (then it already includes the write). Returns the number of entries
// deleted.
//
// KEYS: marker1, entry1, marker2, entry2, ... (one shard).
// ARGV: position, marker TTL in ms.
const invalidateLua = luaHelpers + `
local ph, pl = hilo(ARGV[1], 1)
local n = 0
for i = 1, #KEYS, 2 do
  local m = redis.call('GET', KEYS[i])
  local raise = true
  if m and string.len(m) == 8 then
    local mh, ml = hilo(m, 1)
    raise = gt(ph, pl, mh, ml)
  end
  if raise then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  else
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
  local v = redis.call('GET', KEYS[i + 1])
  if v then
    local keep = false
    if string.len(v) >= 18 then
      local vh, vl = hilo(v, 10)
      keep = gt(vh, vl, ph, pl)
    end
    if not keep then
      redis.call('DEL', KEYS[i + 1])
      n = n + 1
    end
  end
end
return n
`
