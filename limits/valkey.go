package limits

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/internal/valkeyx"
)

// The Valkey layout of limits. A key's names share the hash tag
// "{<prefix>:<key id>}", so each script touches one cluster slot while
// different keys spread over a cluster:
//
//	{<prefix>:<id>}:rate            hash: req, tok — the global buckets' GCRA
//	                                theoretical arrival times, unix nanoseconds;
//	                                a missing field is a full bucket, and the
//	                                hash expires once both are full again (or
//	                                later, never earlier)
//	{<prefix>:<id>}:spend:<yyyymm>  hash: the month's usage (requests,
//	                                prompt_tokens, cached_tokens and
//	                                cache_write_tokens (parts of
//	                                prompt_tokens), completion_tokens, spent, and
//	                                m:<model>:<counter> per model), leased (the
//	                                sum of every node's lease), and per node
//	                                lease:<node>, exp:<node> (unix ms, Valkey's
//	                                clock) and seq:<node> (the last usage
//	                                record applied, so a retried one is not
//	                                counted twice)
//	{<prefix>}:limits:nodes         sorted set: node id → last heartbeat (unix ms)
//
// Money is integer pico-dollars throughout. Lua numbers are doubles, exact
// only to 2^53 (about $9007 in pico-dollars), so the scripts do money in two
// parts, dollars and pico-dollars, and write it back as decimal strings.

// luaMoney is the prelude of the scripts that handle money: two-part
// arithmetic on non-negative pico-dollar amounts, and the usage counters.
const luaMoney = `
local P = 1000000000000
local Z = {0, 0}
local function m(s)
  if not s or s == '' or string.sub(s, 1, 1) == '-' then return Z end
  local n = #s
  if n <= 12 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, n - 12)), tonumber(string.sub(s, n - 11))}
end
local function mstr(a)
  if a[1] == 0 then return string.format('%d', a[2]) end
  return string.format('%d%012d', a[1], a[2])
end
local function mzero(a) return a[1] == 0 and a[2] == 0 end
local function mless(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end
local function mmin(a, b) if mless(a, b) then return a end return b end
local function madd(a, b)
  local hi, lo = a[1] + b[1], a[2] + b[2]
  if lo >= P then hi, lo = hi + 1, lo - P end
  return {hi, lo}
end
local function msub(a, b)
  if mless(a, b) then return Z end
  local hi, lo = a[1] - b[1], a[2] - b[2]
  if lo < 0 then hi, lo = hi - 1, lo + P end
  return {hi, lo}
end
local function mdiv(a, k)
  return {math.floor(a[1] / k), math.floor(((a[1] % k) * P + a[2]) / k)}
end
local counters = {'requests', 'prompt_tokens', 'completion_tokens', 'spent', 'cached_tokens', 'cache_write_tokens'}
local function addUsage(key, i)
  for j = 1, 6 do
    if ARGV[i + j - 1] ~= '0' then redis.call('HINCRBY', key, counters[j], ARGV[i + j - 1]) end
  end
  for k = i + 6, #ARGV, 7 do
    for j = 1, 6 do
      if ARGV[k + j] ~= '0' then redis.call('HINCRBY', key, 'm:' .. ARGV[k] .. ':' .. counters[j], ARGV[k + j]) end
    end
  end
end
`

// addUsageScript adds one usage record to a month hash.
//
//	KEYS: month hash
//	ARGV: requests, prompt tokens, completion tokens, spent, cached tokens,
//	      cache-write tokens, then per model name, requests, prompt tokens,
//	      completion tokens, spent, cached tokens, cache-write tokens (the
//	      cache counts last, so that spent keeps its place for budgetScript;
//	      a node of an older version runs its own script with its own
//	      arguments, so nodes of both versions can share a hash)
var addUsageScript = valkey.NewLuaScript(luaMoney + `
addUsage(KEYS[1], 1)
return 1
`)

// budgetScript is every change a node makes to its side of a key-month, in
// one atomic step. First it applies a usage record, unless the record's
// sequence number is not above the last one applied for the node (the retry
// of a call that did reach Valkey): it adds the counters and turns as much of
// the node's lease as was spent into spend. Then it gives back part (or all)
// of the node's lease. Then it grants need plus up to extra from what the cap
// leaves (cap − spent − leased), reclaiming the leases of nodes silent past
// their expiry when that falls short. Far from the cap extra is granted
// whole; the closer the cap, the less (an eighth of what would be left), down
// to none, so that near the cap every reservation is decided here, one by
// one. A refused grant gives back spare, so that what the refused node held
// is there for the others. Last it renews the node's lease for ttl.
//
//	KEYS: month hash
//	ARGV: node, ttl ms, seq ("0": no record), give back, "1" to give back
//	      all, need ("0": no grant), extra, cap, spare, then the record as
//	      addUsageScript's ARGV
//	returns {granted, node's lease, spent, leased}, as decimal strings
var budgetScript = valkey.NewLuaScript(luaMoney + `
local key, node = KEYS[1], ARGV[1]
local lf, ef, sf = 'lease:' .. node, 'exp:' .. node, 'seq:' .. node
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mine = m(redis.call('HGET', key, lf))
local leased = m(redis.call('HGET', key, 'leased'))
local seq = tonumber(ARGV[3])
if seq > 0 and seq > (tonumber(redis.call('HGET', key, sf)) or 0) then
  addUsage(key, 10)
  local used = mmin(m(ARGV[13]), mine)
  mine, leased = msub(mine, used), msub(leased, used)
  redis.call('HSET', key, sf, ARGV[3])
end
local back = mmin(m(ARGV[4]), mine)
if ARGV[5] == '1' then back = mine end
mine, leased = msub(mine, back), msub(leased, back)
local spent = m(redis.call('HGET', key, 'spent'))
local granted = Z
local need = m(ARGV[6])
if not mzero(need) then
  local cap = m(ARGV[8])
  local avail = msub(cap, madd(spent, leased))
  if mless(avail, need) then
    local all = redis.call('HGETALL', key)
    for i = 1, #all, 2 do
      local f = all[i]
      if string.sub(f, 1, 4) == 'exp:' and f ~= ef and tonumber(all[i + 1]) < now then
        local other = 'lease:' .. string.sub(f, 5)
        leased = msub(leased, m(redis.call('HGET', key, other)))
        redis.call('HDEL', key, f, other)
      end
    end
    avail = msub(cap, madd(spent, leased))
  end
  if mless(avail, need) then
    local spare = mmin(m(ARGV[9]), mine)
    mine, leased = msub(mine, spare), msub(leased, spare)
  else
    granted = madd(need, mmin(m(ARGV[7]), mdiv(msub(avail, need), 8)))
    mine, leased = madd(mine, granted), madd(leased, granted)
  end
end
if mzero(mine) then
  redis.call('HDEL', key, lf, ef)
else
  redis.call('HSET', key, lf, mstr(mine), ef, string.format('%d', now + tonumber(ARGV[2])))
end
if mzero(leased) then
  redis.call('HDEL', key, 'leased')
else
  redis.call('HSET', key, 'leased', mstr(leased))
end
return {mstr(granted), mstr(mine), mstr(spent), mstr(leased)}
`)

// rateScript leases tokens from a key's two global buckets, request and
// token, and takes back what a node returns. It is GCRA as in Rate, in
// nanoseconds; a theoretical arrival time does not fit a double exactly, so
// it is handled as seconds and nanoseconds, and only its distance from now
// (at most minutes) is computed with.
//
// For each bucket with a limit: first the returned tokens go back (a
// negative return charges a debt); then, if every bucket has its need, each
// is granted its ask, but never more than half of what it has left nor less
// than its need, so near exhaustion slices shrink to one token. If any lacks
// its need, neither grants anything, as Gate refuses a request for tokens
// without spending its request.
//
//	KEYS: rate hash
//	ARGV: now (unix ns), then per bucket (req, tok): limit per minute
//	      ("0": none), return, need, ask
//	returns {ok, refusing bucket (1 req, 2 tok), retry after ns,
//	         granted req, granted tok, req's TAT − now, tok's TAT − now}
var rateScript = valkey.NewLuaScript(`
local W = 60000000000
local function split(s)
  local n = #s
  if n <= 9 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))
end
local ns, nn = split(ARGV[1])
local fields = {'req', 'tok'}
local lim, iv, d, need, ask = {}, {}, {0, 0}, {0, 0}, {0, 0}
local ok, which, wait = 1, 0, 0
for b = 1, 2 do
  local i = 2 + (b - 1) * 4
  lim[b] = tonumber(ARGV[i])
  if lim[b] > 0 then
    iv[b] = math.max(math.floor(W / lim[b]), 1)
    local x = 0
    local tat = redis.call('HGET', KEYS[1], fields[b])
    if tat then
      local ts, tn = split(tat)
      x = (ts - ns) * 1000000000 + (tn - nn)
    end
    d[b] = math.max(math.max(x, 0) - tonumber(ARGV[i + 1]) * iv[b], 0)
    need[b], ask[b] = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
    if ok == 1 and need[b] > 0 then
      if need[b] > lim[b] then
        ok, which, wait = 0, b, W
      elseif d[b] + need[b] * iv[b] > W then
        ok, which, wait = 0, b, d[b] + need[b] * iv[b] - W
      end
    end
  end
end
local grant, ttl = {0, 0}, 0
for b = 1, 2 do
  if lim[b] > 0 then
    if ok == 1 and ask[b] > 0 then
      local avail = math.max(math.min(math.floor((W - d[b]) / iv[b]), lim[b]), 0)
      grant[b] = math.min(ask[b], avail, math.max(need[b], math.floor(avail / 2)))
      d[b] = d[b] + grant[b] * iv[b]
    end
    if d[b] == 0 then
      redis.call('HDEL', KEYS[1], fields[b])
    else
      local total = nn + d[b]
      redis.call('HSET', KEYS[1], fields[b], string.format('%d%09d', ns + math.floor(total / 1000000000), total % 1000000000))
      ttl = math.max(ttl, math.ceil(d[b] / 1000000) + 1000)
    end
  end
end
if ttl > 0 and ttl > redis.call('PTTL', KEYS[1]) then redis.call('PEXPIRE', KEYS[1], ttl) end
return {ok, which, wait, grant[1], grant[2], d[1], d[2]}
`)

// heartbeatScript registers (or, with "0", removes) a node and drops the
// nodes silent for longer than the window.
//
//	KEYS: nodes sorted set
//	ARGV: node, "1" alive / "0" leaving, window ms
//	returns the number of live nodes
var heartbeatScript = valkey.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
return redis.call('ZCARD', KEYS[1])
`)

// ValkeyLedger is the Ledger of a multi-node deployment: month-to-date usage
// per key in Valkey hashes (see the layout above), added to atomically per
// record. A Gate made by NewValkeyGate reads through it and writes with its
// own scripts, which also settle budget leases and are safe to retry; Add is
// for other writers (a one-node Gate, tools), and a call of it that fails
// after reaching Valkey may have been applied.
type ValkeyLedger struct {
	c       valkey.Client
	prefix  string
	timeout time.Duration
}

// NewValkeyLedger returns a ledger in c under prefix (empty means
// valkeyx.DefaultPrefix), each call bounded by timeout (zero means
// valkeyx.DefaultTimeout). The caller keeps owning c.
func NewValkeyLedger(c valkey.Client, prefix string, timeout time.Duration) (*ValkeyLedger, error) {
	prefix, timeout = valkeyx.Prefix(prefix), valkeyx.Timeout(timeout)
	if c == nil {
		return nil, errors.New("limits: valkey: no client")
	}
	if err := valkeyx.Check(prefix, timeout); err != nil {
		return nil, fmt.Errorf("limits: valkey: %w", err)
	}
	return &ValkeyLedger{c: c, prefix: prefix, timeout: timeout}, nil
}

// monthKey is the name of keyID's usage hash for month.
func (l *ValkeyLedger) monthKey(keyID string, month Month) string {
	return "{" + l.prefix + ":" + keyID + "}:spend:" + strconv.Itoa(int(month))
}

// rateKey is the name of keyID's global buckets.
func (l *ValkeyLedger) rateKey(keyID string) string {
	return "{" + l.prefix + ":" + keyID + "}:rate"
}

// Load implements Ledger: one HGETALL.
func (l *ValkeyLedger) Load(ctx context.Context, keyID string, month Month) (*MonthUsage, error) {
	u, _, err := l.load(ctx, keyID, month, "")
	return u, err
}

// load is Load, also returning the last usage record applied for node.
func (l *ValkeyLedger) load(ctx context.Context, keyID string, month Month, node string) (*MonthUsage, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	fields, err := l.c.Do(ctx, l.c.B().Hgetall().Key(l.monthKey(keyID, month)).Build()).AsStrMap()
	if err != nil {
		return nil, 0, fmt.Errorf("limits: valkey: load usage of %s: %w", keyID, err)
	}
	u := &MonthUsage{KeyID: keyID, Month: month}
	var seq int64
	seqField := "seq:" + node
	for f, v := range fields {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue // not a counter
		}
		if node != "" && f == seqField {
			seq = n
			continue
		}
		c := &u.Counts
		if model, counter, ok := strings.Cut(f, ":"); ok {
			if model != "m" {
				continue // a lease's field
			}
			i := strings.LastIndexByte(counter, ':')
			if i < 0 {
				continue
			}
			model, counter = counter[:i], counter[i+1:]
			if u.Models == nil {
				u.Models = make(map[string]*Counts)
			}
			if c = u.Models[model]; c == nil {
				c = &Counts{}
				u.Models[model] = c
			}
			f = counter
		}
		switch f {
		case "requests":
			c.Requests = n
		case "prompt_tokens":
			c.PromptTokens = n
		case "cached_tokens":
			c.CachedTokens = n
		case "cache_write_tokens":
			c.CacheWriteTokens = n
		case "completion_tokens":
			c.CompletionTokens = n
		case "spent":
			c.Spent = usd.Pico(n)
		}
	}
	return u, seq, nil
}

// usageArgs appends u's counts as addUsageScript's ARGV.
func usageArgs(args []string, u *MonthUsage) []string {
	if u == nil {
		return append(args, "0", "0", "0", "0", "0", "0")
	}
	args = countArgs(args, &u.Counts)
	for name, c := range u.Models {
		if !c.zero() {
			args = countArgs(append(args, name), c)
		}
	}
	return args
}

func countArgs(args []string, c *Counts) []string {
	return append(args,
		strconv.FormatInt(c.Requests, 10),
		strconv.FormatInt(c.PromptTokens, 10),
		strconv.FormatInt(c.CompletionTokens, 10),
		strconv.FormatInt(int64(c.Spent), 10),
		strconv.FormatInt(c.CachedTokens, 10),
		strconv.FormatInt(c.CacheWriteTokens, 10))
}

// Add implements Ledger: one script per record, all in one pipeline.
func (l *ValkeyLedger) Add(ctx context.Context, deltas []*MonthUsage) error {
	if len(deltas) == 0 {
		return nil
	}
	execs := make([]valkey.LuaExec, len(deltas))
	for i, d := range deltas {
		execs[i] = valkey.LuaExec{Keys: []string{l.monthKey(d.KeyID, d.Month)}, Args: usageArgs(nil, d)}
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	for i, res := range addUsageScript.ExecMulti(ctx, l.c, execs...) {
		if err := res.Error(); err != nil {
			return fmt.Errorf("limits: valkey: add usage of %s: %w", deltas[i].KeyID, err)
		}
	}
	return nil
}

// Close implements Ledger. The client is the caller's, so it stays open.
func (l *ValkeyLedger) Close() error { return nil }
