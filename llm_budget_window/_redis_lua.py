"""The server-side Lua scripts of the Redis backend, one per operation.

Each script runs atomically in one EVALSHA: it reads the budget's state,
evicts what has aged out of every window, decides, commits and writes the
state back. All of a budget lives in one Redis hash (so it expires, is
evicted and is deleted as a whole):

- field ``s``: the state, packed little-endian doubles: the latest time seen,
  the next sequence number, the running prefix sums of tokens and
  nano-dollars over every record ever committed (as first committed) and
  the server time (ms) the key's expiry was last pushed out to; then per
  window its head (the sequence number of its oldest record), the prefix
  sums just before that head and the time of that oldest record;
- field ``x``: only while some window's sums include a correction (see
  below): the sums of every correction made and the count of released
  records, then per window the corrections and releases of the records it
  has evicted and how many of the records it holds carry a correction;
- field ``c``: the layout tag and the window durations in nanoseconds the
  state was made for;
- field ``<seq>``: one record per admitted call, packed: its time and the
  prefix sums including it, followed by the call's id;
- field ``i<call id>``: the sequence number of that call, so that a call
  sent twice (a client retrying after a timeout) is committed once, and so
  that a reservation finds its record again;
- field ``d<seq>``: only for a settled or released record, its correction:
  the actual amounts minus the committed ones, and whether it was released.

A window's sums are the prefix sums minus its base, plus the corrections
not yet evicted from it, so eviction costs one read per evicted record and
``retry_after`` a binary search over the window's records: nothing is ever
proportional to the records held. Settling or releasing a record never
rewrites a prefix sum: it adds its correction to the global sums, and to the
evicted corrections of every window that no longer holds the record, whose
sums therefore do not move. That is O(windows). Once every window has
evicted every correction, the corrections cancel out and ``x`` is deleted,
so a budget without open corrections reads and writes only ``s``.

Every argument but the call id and the config travels in one string of
packed doubles (see ``pack_call``): the call's time and amounts, then what
is fixed for a budget (expiry, the longest window, per window its duration
and caps), packed once by the client.

Lua numbers are doubles, exact only below 2**53. Every integer that can be
larger (times and durations in nanoseconds, token and nano-dollar sums, caps)
travels and is stored as a pair ``(high, low)`` meaning ``high * 10**9 +
low`` with ``0 <= low < 10**9``, and all arithmetic is done on pairs, which
keeps every result exact. Prefix sums grow without bound, so they are kept
modulo ``10**19`` (above 2**63): the difference of two of them is a window
sum or a part of one, which never exceeds 2**63 - 1, so it is exact.
"""

from __future__ import annotations

import struct

__all__ = [
    "CHECK",
    "LAYOUT_TAG",
    "RELEASE",
    "RETRY_AFTER",
    "SETTLE",
    "SNAPSHOT",
    "TRY_RECORD",
    "encode_pair",
    "pack_budget",
    "pack_call",
]

#: Prefix of the stored config: a budget stored in another layout (by an
#: older version) has another config and is refused, never misread.
LAYOUT_TAG = "v2:"

PAIR_BASE = 10**9

_CALL = struct.Struct("<7d")


def encode_pair(value: int) -> tuple[int, int]:
    """Split an integer into ``(high, low)`` with ``value == high * 10**9 + low``."""
    return divmod(value, PAIR_BASE)


def pack_budget(
    expire_ms: int, renew_ms: int, longest: int, windows: list[tuple[int, ...]]
) -> bytes:
    """Pack what is fixed for a budget: the tail of every call's argument string.

    ``expire_ms`` is the expiry set on the key, ``renew_ms`` how much of it
    must be left for a call not to set it again, ``longest`` the 0-based
    index of the longest window; each window is (duration ns, token cap,
    nano-dollar cap, request cap), all ints below 2**63.
    """
    values: list[int] = [expire_ms, renew_ms, longest + 1]
    for window in windows:
        for value in window:
            values.extend(encode_pair(value))
    return struct.pack(f"<{len(values)}d", *values)


def pack_call(now_ns: int | None, tokens: int, nanos: int, budget: bytes) -> bytes:
    """Pack one call's time (None: the server's clock) and amounts before ``budget``."""
    tok_high, tok_low = divmod(tokens, PAIR_BASE)
    nanos_high, nanos_low = divmod(nanos, PAIR_BASE)
    if now_ns is None:
        head = _CALL.pack(0, 0, 0, tok_high, tok_low, nanos_high, nanos_low)
    else:
        now_high, now_low = divmod(now_ns, PAIR_BASE)
        head = _CALL.pack(
            1, now_high, now_low, tok_high, tok_low, nanos_high, nanos_low
        )
    return head + budget


# The state, loaded with the call id's sequence number in the same read.
_LOAD = r"""
local key = KEYS[1]
local call_id = ARGV[1]
local id_field = 'i' .. call_id
local stored = redis.call('HMGET', key, 's', 'c', 'x', id_field)
"""

_PRELUDE = r"""
local fresh = not stored[1]
if not fresh and stored[2] ~= ARGV[2] then
  return redis.error_reply('LBWCONFIG ' .. tostring(stored[2]))
end

local B = 1000000000
local MOD_HI = 10000000000
local MAX_H, MAX_L = 9223372036, 854775807

local function add(ah, al, bh, bl)
  local l = al + bl
  if l >= B then return ah + bh + 1, l - B end
  return ah + bh, l
end

local function sub(ah, al, bh, bl)
  local l = al - bl
  if l < 0 then return ah - bh - 1, l + B end
  return ah - bh, l
end

local function less(ah, al, bh, bl)
  return ah < bh or (ah == bh and al < bl)
end

local function add_mod(ah, al, bh, bl)
  local h, l = add(ah, al, bh, bl)
  if h >= MOD_HI then h = h - MOD_HI end
  return h, l
end

local function sub_mod(ah, al, bh, bl)
  local h, l = sub(ah, al, bh, bl)
  if h < 0 then h = h + MOD_HI end
  return h, l
end

local function split(x)
  local h = math.floor(x / B)
  return h, x - h * B
end

local function read(seq)
  local v = redis.call('HGET', key, seq)
  if not v then error('LBWCORRUPT budget ' .. key .. ' has lost record ' .. seq) end
  return v
end

-- P: the arguments. 1: whether now is given, 2-3: now, 4-5: tokens, 6-7:
-- nano-dollars, 8: the expiry (ms), 9: the expiry left (ms) below which it
-- is pushed out again, 10: the longest window (1-based); then per window
-- (from PW + 8 * (w - 1)) duration, token, nano-dollar and request caps.
local P = {struct.unpack('<' .. string.rep('d', #ARGV[3] / 8), ARGV[3])}
local PW = 10
local nw = (#ARGV[3] / 8 - PW) / 8
local longest = P[10]

-- S: the state. 1-2: the latest time, 3: the next sequence number, 4-5 and
-- 6-7: the prefix sums of tokens and nano-dollars, 8: the server time (ms)
-- the expiry reaches; then per window (from G + W * (w - 1)) its head, the
-- prefix sums before it (2 pairs), the time of its oldest record.
local G, W = 8, 7
local ns = G + W * nw
local fmt = '<' .. string.rep('d', ns)
local S
if fresh then
  S = {}
  for i = 1, ns do S[i] = 0 end
else
  S = {struct.unpack(fmt, stored[1])}
end

-- X: the corrections, false while there are none. 1-2 and 3-4: the sums of
-- every correction, 5: the released records; then per window (from XG + XW
-- * (w - 1)) the corrections it has evicted (2 pairs), the releases it has
-- evicted, how many of its records carry a correction.
local XG, XW = 5, 6
local nx = XG + XW * nw
local had_x = stored[3] and true or false
local X = false
if had_x then X = {struct.unpack('<' .. string.rep('d', nx), stored[3])} end
local x_dirty = false

local now_h, now_l, real_ms

-- A window's sums of tokens, nano-dollars and requests, as three pairs.
local function sums(w)
  local o = G + W * (w - 1)
  local th, tl = sub_mod(S[4], S[5], S[o + 2], S[o + 3])
  local nh, nl = sub_mod(S[6], S[7], S[o + 4], S[o + 5])
  local r = S[3] - S[o + 1]
  if X then
    local q = XG + XW * (w - 1)
    local xh, xl = sub_mod(X[1], X[2], X[q + 1], X[q + 2])
    th, tl = add_mod(th, tl, xh, xl)
    xh, xl = sub_mod(X[3], X[4], X[q + 3], X[q + 4])
    nh, nl = add_mod(nh, nl, xh, xl)
    r = r - (X[5] - X[q + 5])
  end
  local rh, rl = split(r)
  return th, tl, nh, nl, rh, rl
end

-- The first window and axis where used + requested > cap, in order. The
-- pair arithmetic is written out: this runs for every window on every call.
local function find_problem()
  for w = 1, nw do
    local p = PW + 8 * (w - 1)
    local th, tl, nh, nl, rh, rl
    if X then
      th, tl, nh, nl, rh, rl = sums(w)
    else
      local o = G + W * (w - 1)
      th, tl = S[4] - S[o + 2], S[5] - S[o + 3]
      if tl < 0 then th, tl = th - 1, tl + B end
      if th < 0 then th = th + MOD_HI end
      nh, nl = S[6] - S[o + 4], S[7] - S[o + 5]
      if nl < 0 then nh, nl = nh - 1, nl + B end
      if nh < 0 then nh = nh + MOD_HI end
      rh, rl = split(S[3] - S[o + 1])
    end
    local h, l = th + P[4], tl + P[5]
    if l >= B then h, l = h + 1, l - B end
    if P[p + 3] < h or (P[p + 3] == h and P[p + 4] < l) then return w, 1, th, tl end
    h, l = nh + P[6], nl + P[7]
    if l >= B then h, l = h + 1, l - B end
    if P[p + 5] < h or (P[p + 5] == h and P[p + 6] < l) then return w, 2, nh, nl end
    h, l = rh, rl + 1
    if l >= B then h, l = h + 1, l - B end
    if P[p + 7] < h or (P[p + 7] == h and P[p + 8] < l) then return w, 3, rh, rl end
  end
  return nil
end

-- Write the state back (with any extra fields). With expire, make sure the
-- key lives at least P[9] ms more: push its expiry out to P[8] ms when less
-- is left, so that it is set once per P[8] - P[9] ms, not on every call.
-- Without the server's clock (a call passing now) it is always set.
local function save(extra, expire)
  local renew = false
  if expire then
    if not real_ms then
      renew, S[8] = true, 0
    elseif S[8] < real_ms + P[9] then
      renew, S[8] = true, real_ms + P[8]
    end
  end
  S[1], S[2] = now_h, now_l
  local state = struct.pack(fmt, unpack(S, 1, ns))
  if not (fresh or x_dirty) then
    -- The common case: the state and any new fields, with no table built.
    if extra[1] then
      redis.call('HSET', key, 's', state, unpack(extra))
    else
      redis.call('HSET', key, 's', state)
    end
  else
    local args = {'s', state}
    if fresh then
      args[#args + 1] = 'c'
      args[#args + 1] = ARGV[2]
    end
    if x_dirty then
      -- Once every window has evicted every correction made, they cancel
      -- out and are the same as none.
      local cancel = true
      for w = 1, nw do
        local q = XG + XW * (w - 1)
        if X[q + 1] ~= X[1] or X[q + 2] ~= X[2] or X[q + 3] ~= X[3]
            or X[q + 4] ~= X[4] or X[q + 5] ~= X[5] or X[q + 6] ~= 0 then
          cancel = false
        end
      end
      if cancel then
        if had_x then redis.call('HDEL', key, 'x') end
      else
        args[#args + 1] = 'x'
        args[#args + 1] = struct.pack('<' .. string.rep('d', nx), unpack(X, 1, nx))
      end
    end
    for i = 1, #extra do args[#args + 1] = extra[i] end
    redis.call('HSET', key, unpack(args))
  end
  if renew then redis.call('PEXPIRE', key, P[8]) end
end
"""

_ADVANCE = r"""
-- The time of this call: never before the latest time seen.
if P[1] == 0 then
  local t = redis.call('TIME')
  local seconds, micros = tonumber(t[1]), tonumber(t[2])
  now_h, now_l = seconds, micros * 1000
  real_ms = seconds * 1000 + math.floor(micros / 1000)
else
  now_h, now_l = P[2], P[3]
end
if not fresh and less(now_h, now_l, S[1], S[2]) then
  now_h, now_l = S[1], S[2]
end

-- Evict: a record at t leaves a window of length d once t + d <= now. The
-- state holds each window's oldest time, so records are read only when one
-- leaves. Records that leave the longest window have left every window;
-- they are deleted after the loop, because a shorter window may still walk
-- past them.
local dead = {}
for w = 1, nw do
  local o = G + W * (w - 1)
  local seq = S[o + 1]
  local p = PW + 8 * (w - 1)
  local cut_h, cut_l = now_h - P[p + 1], now_l - P[p + 2]
  if cut_l < 0 then cut_h, cut_l = cut_h - 1, cut_l + B end
  local old_h, old_l = S[o + 6], S[o + 7]
  if seq < S[3] and not (cut_h < old_h or (cut_h == old_h and cut_l < old_l)) then
    local q = XG + XW * (w - 1)
    while seq < S[3] do
      local rec, delta
      if X and X[q + 6] > 0 then
        local v = redis.call('HMGET', key, seq, 'd' .. seq)
        if not v[1] then
          error('LBWCORRUPT budget ' .. key .. ' has lost record ' .. seq)
        end
        rec, delta = v[1], v[2]
      else
        rec = read(seq)
      end
      local t_h, t_l, pt_h, pt_l, pn_h, pn_l = struct.unpack('<dddddd', rec)
      if less(cut_h, cut_l, t_h, t_l) then
        S[o + 6], S[o + 7] = t_h, t_l
        break
      end
      S[o + 2], S[o + 3], S[o + 4], S[o + 5] = pt_h, pt_l, pn_h, pn_l
      if delta then
        local dth, dtl, dnh, dnl, r = struct.unpack('<ddddd', delta)
        X[q + 1], X[q + 2] = add_mod(X[q + 1], X[q + 2], dth, dtl)
        X[q + 3], X[q + 4] = add_mod(X[q + 3], X[q + 4], dnh, dnl)
        X[q + 5] = X[q + 5] + r
        X[q + 6] = X[q + 6] - 1
        x_dirty = true
        if w == longest then dead[#dead + 1] = 'd' .. seq end
      end
      if w == longest then
        dead[#dead + 1] = seq
        if #rec > 48 then dead[#dead + 1] = 'i' .. string.sub(rec, 49) end
      end
      seq = seq + 1
    end
    S[o + 1] = seq
  end
end
for i = 1, #dead, 4000 do
  redis.call('HDEL', key, unpack(dead, i, math.min(i + 3999, #dead)))
end
"""

# What answers how long a request must wait: refusals and retry_after.
_WAIT = r"""
local amt_h = {P[4], P[6], 0}
local amt_l = {P[5], P[7], 1}

local function positive(h, l)
  return h > 0 or (h == 0 and l > 0)
end

-- A record and its correction (false if it has none).
local function read_both(seq)
  local v = redis.call('HMGET', key, seq, 'd' .. seq)
  if not v[1] then error('LBWCORRUPT budget ' .. key .. ' has lost record ' .. seq) end
  return v[1], v[2]
end

-- Whether records head..seq of window w hold at least the excess eh/el.
-- Exact only while window w holds no corrected record.
local function covers(w, seq, eh, el)
  local o = G + W * (w - 1)
  local _, _, pt_h, pt_l, pn_h, pn_l = struct.unpack('<dddddd', read(seq))
  local ph, pl = sub_mod(pt_h, pt_l, S[o + 2], S[o + 3])
  if less(ph, pl, eh[1], el[1]) then return false end
  ph, pl = sub_mod(pn_h, pn_l, S[o + 4], S[o + 5])
  if less(ph, pl, eh[2], el[2]) then return false end
  ph, pl = split(seq - S[o + 1] + 1)
  return not less(ph, pl, eh[3], el[3])
end

-- The sequence number of the first record of window w after whose
-- departure the excess eh/el is gone, walking the records one by one.
-- LIMITATION: a settled or released record changes the amounts between
-- the stored prefix sums, so the bisection would be wrong for a window
-- holding one. This walk costs one read per record up to the one that
-- makes room (as the in-process engines always do) instead of a logarithm
-- of the records held; a window falls back to it only while it holds a
-- corrected record. A tree of corrections would avoid it, at the price of
-- many more writes per settle.
local function walk(w, eh, el)
  local o = G + W * (w - 1)
  local pt_h, pt_l, pn_h, pn_l = S[o + 2], S[o + 3], S[o + 4], S[o + 5]
  for seq = S[o + 1], S[3] - 1 do
    local rec, delta = read_both(seq)
    local _, _, qt_h, qt_l, qn_h, qn_l = struct.unpack('<dddddd', rec)
    local th, tl = sub_mod(qt_h, qt_l, pt_h, pt_l)
    local nh, nl = sub_mod(qn_h, qn_l, pn_h, pn_l)
    pt_h, pt_l, pn_h, pn_l = qt_h, qt_l, qn_h, qn_l
    local gone = 0
    if delta then
      local dth, dtl, dnh, dnl, r = struct.unpack('<ddddd', delta)
      th, tl = add_mod(th, tl, dth, dtl)
      nh, nl = add_mod(nh, nl, dnh, dnl)
      gone = r
    end
    if gone == 0 then
      eh[1], el[1] = sub(eh[1], el[1], th, tl)
      eh[2], el[2] = sub(eh[2], el[2], nh, nl)
      eh[3], el[3] = sub(eh[3], el[3], 0, 1)
      if not (positive(eh[1], el[1]) or positive(eh[2], el[2])
              or positive(eh[3], el[3])) then
        return seq
      end
    end
  end
  return S[3] - 1
end

-- Nanoseconds until the request fits every window: never, high, low.
local function wait_ns()
  for w = 1, nw do
    local p = PW + 8 * (w - 1)
    for a = 1, 3 do
      if less(P[p + 2 * a + 1], P[p + 2 * a + 2], amt_h[a], amt_l[a]) then
        return 1, 0, 0
      end
    end
  end
  local uh, ul = now_h, now_l
  for w = 1, nw do
    local p = PW + 8 * (w - 1)
    local sh, sl = {}, {}
    sh[1], sl[1], sh[2], sl[2], sh[3], sl[3] = sums(w)
    local eh, el, over = {}, {}, false
    for a = 1, 3 do
      local th, tl = add(sh[a], sl[a], amt_h[a], amt_l[a])
      eh[a], el[a] = sub(th, tl, P[p + 2 * a + 1], P[p + 2 * a + 2])
      if positive(eh[a], el[a]) then over = true end
    end
    if over then
      local lo
      if X and X[XG + XW * (w - 1) + 6] > 0 then
        lo = walk(w, eh, el)
      else
        -- Prefix sums only grow, so the first record whose departure makes
        -- room is found by bisection.
        local hi
        lo, hi = S[G + W * (w - 1) + 1], S[3] - 1
        while lo < hi do
          local mid = math.floor((lo + hi) / 2)
          if covers(w, mid, eh, el) then hi = mid else lo = mid + 1 end
        end
      end
      local t_h, t_l = struct.unpack('<dd', read(lo))
      t_h, t_l = add(t_h, t_l, P[p + 1], P[p + 2])
      if less(uh, ul, t_h, t_l) then uh, ul = t_h, t_l end
    end
  end
  local wh, wl = sub(uh, ul, now_h, now_l)
  return 0, wh, wl
end

"""

_DEDUPE = r"""
if stored[4] then return {0} end
"""

# A refusal: its waiting helpers are defined only then, not on every call.
_DECIDE = (
    r"""
local w, a, uh, ul = find_problem()
if w then
"""
    + _WAIT
    + r"""
  local never, wh, wl = wait_ns()
  save({}, true)
  return {1, w - 1, a - 1, uh, ul, never, wh, wl}
end
"""
)

_COMMIT = r"""
local ch, cl = add_mod(S[4], S[5], P[4], P[5])
local nh, nl = add_mod(S[6], S[7], P[6], P[7])
local rec = struct.pack('<dddddd', now_h, now_l, ch, cl, nh, nl) .. call_id
S[4], S[5], S[6], S[7] = ch, cl, nh, nl
local seq = S[3]
for w = 1, nw do
  local o = G + W * (w - 1)
  if S[o + 1] == seq then S[o + 6], S[o + 7] = now_h, now_l end
end
S[3] = seq + 1
save({seq, rec, id_field, seq}, true)
return {0}
"""

# The reservation's record, found by the call id it was committed under; a
# call id that is gone (the record left the longest window, or the budget
# was reset or expired) makes the correction a no-op.
_FIND_RESERVED = r"""
local found = stored[4]
if not found then return {0} end
"""

_CORRECT = r"""
local amt_h = {P[4], P[6], 0}
local amt_l = {P[5], P[7], 1}

local function positive(h, l)
  return h > 0 or (h == 0 and l > 0)
end

local function read_both(seq)
  local v = redis.call('HMGET', key, seq, 'd' .. seq)
  if not v[1] then error('LBWCORRUPT budget ' .. key .. ' has lost record ' .. seq) end
  return v[1], v[2]
end

local seq = tonumber(found)
local lo = G + W * (longest - 1)
if fresh or seq < S[lo + 1] or seq >= S[3] then return {0} end
now_h, now_l = S[1], S[2]

-- The committed amounts: this record's prefix sums minus the previous one's.
local rec, delta = read_both(seq)
local _, _, pt_h, pt_l, pn_h, pn_l = struct.unpack('<dddddd', rec)
local qt_h, qt_l, qn_h, qn_l
if seq == S[lo + 1] then
  qt_h, qt_l, qn_h, qn_l = S[lo + 2], S[lo + 3], S[lo + 4], S[lo + 5]
else
  local _, _, a1, a2, a3, a4 = struct.unpack('<dddddd', read(seq - 1))
  qt_h, qt_l, qn_h, qn_l = a1, a2, a3, a4
end
local ot_h, ot_l = sub_mod(pt_h, pt_l, qt_h, qt_l)
local on_h, on_l = sub_mod(pn_h, pn_l, qn_h, qn_l)

-- Its correction so far, and the amounts it counts now.
local dt_h, dt_l, dn_h, dn_l, was_released = 0, 0, 0, 0, 0
if delta then
  dt_h, dt_l, dn_h, dn_l, was_released = struct.unpack('<ddddd', delta)
end
-- A released record stays released: a late or repeated correction of it
-- changes nothing.
if was_released == 1 then return {0} end
local old_th, old_tl = add_mod(ot_h, ot_l, dt_h, dt_l)
local old_nh, old_nl = add_mod(on_h, on_l, dn_h, dn_l)

local new_th, new_tl, new_nh, new_nl, now_released = 0, 0, 0, 0, 1
if not releasing then
  new_th, new_tl, new_nh, new_nl, now_released =
    amt_h[1], amt_l[1], amt_h[2], amt_l[2], 0
  -- No window that holds the record may pass 2**63 - 1.
  local old_h, old_l = {old_th, old_nh}, {old_tl, old_nl}
  local new_h, new_l = {new_th, new_nh}, {new_tl, new_nl}
  for w = 1, nw do
    if S[G + W * (w - 1) + 1] <= seq then
      local sh, sl = {}, {}
      sh[1], sl[1], sh[2], sl[2] = sums(w)
      for a = 1, 2 do
        local limit_h, limit_l = add(MAX_H, MAX_L, old_h[a], old_l[a])
        local total_h, total_l = add(sh[a], sl[a], new_h[a], new_l[a])
        if less(limit_h, limit_l, total_h, total_l) then
          return {1, w - 1, a - 1}
        end
      end
    end
  end
end

-- The new correction, and the change from the old one.
local et_h, et_l = sub_mod(new_th, new_tl, ot_h, ot_l)
local en_h, en_l = sub_mod(new_nh, new_nl, on_h, on_l)
local xt_h, xt_l = sub_mod(et_h, et_l, dt_h, dt_l)
local xn_h, xn_l = sub_mod(en_h, en_l, dn_h, dn_l)
local xr = now_released - was_released
if not X then
  X = {}
  for i = 1, nx do X[i] = 0 end
end
x_dirty = true
X[1], X[2] = add_mod(X[1], X[2], xt_h, xt_l)
X[3], X[4] = add_mod(X[3], X[4], xn_h, xn_l)
X[5] = X[5] + xr

local had = delta and true or false
local has = now_released == 1 or positive(et_h, et_l) or positive(en_h, en_l)
for w = 1, nw do
  local q = XG + XW * (w - 1)
  if S[G + W * (w - 1) + 1] > seq then
    -- Evicted already: its sums must not move.
    X[q + 1], X[q + 2] = add_mod(X[q + 1], X[q + 2], xt_h, xt_l)
    X[q + 3], X[q + 4] = add_mod(X[q + 3], X[q + 4], xn_h, xn_l)
    X[q + 5] = X[q + 5] + xr
  elseif has and not had then
    X[q + 6] = X[q + 6] + 1
  elseif had and not has then
    X[q + 6] = X[q + 6] - 1
  end
end

if has then
  save({'d' .. seq, struct.pack('<ddddd', et_h, et_l, en_h, en_l, now_released)}, false)
else
  if had then redis.call('HDEL', key, 'd' .. seq) end
  save({}, false)
end
return {0}
"""

#: Record the call if it fits: ``{0}``, else commit nothing and answer
#: ``{1, window, axis, used_high, used_low, never, wait_high, wait_low}``.
#: A reservation is such a record; its call id finds it again.
TRY_RECORD = _LOAD + _DEDUPE + _PRELUDE + _ADVANCE + _DECIDE + _COMMIT

#: Answer like TRY_RECORD, committing nothing.
CHECK = _LOAD + _PRELUDE + _ADVANCE + _DECIDE + "save({}, true)\nreturn {0}\n"

#: ``{never, wait_high, wait_low}``: nanoseconds until the request fits.
RETRY_AFTER = (
    _LOAD
    + _PRELUDE
    + _ADVANCE
    + _WAIT
    + "local n, h, l = wait_ns()\nsave({}, true)\nreturn {n, h, l}\n"
)

#: Per window: ``tokens_high, tokens_low, nanos_high, nanos_low, requests``.
SNAPSHOT = (
    _LOAD
    + _PRELUDE
    + _ADVANCE
    + r"""
local out = {}
for w = 1, nw do
  local th, tl, nh, nl, rh, rl = sums(w)
  out[#out + 1] = th
  out[#out + 1] = tl
  out[#out + 1] = nh
  out[#out + 1] = nl
  out[#out + 1] = rh * B + rl
end
save({}, true)
return out
"""
)

#: Set the amounts of the call committed under this call id, in every window
#: that still holds it, at its original time; no time passes and nothing is
#: evicted. ``{0}``, or ``{1, window, axis}`` (nothing changed) when a sum
#: would pass 2**63 - 1. Setting absolute amounts makes a repeat harmless.
SETTLE = _LOAD + _FIND_RESERVED + _PRELUDE + "local releasing = false\n" + _CORRECT

#: Remove the call committed under this call id from every window that
#: still holds it, the requests axis included: ``{0}``. Idempotent.
RELEASE = _LOAD + _FIND_RESERVED + _PRELUDE + "local releasing = true\n" + _CORRECT
