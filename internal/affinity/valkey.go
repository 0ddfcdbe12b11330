package affinity

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/tokenhub/tokenhub/internal/valkeyx"
)

// ValkeyStore is the shared Store: every node pointed at the same Valkey
// and prefix knows the ids any of them remembered. Its layout, under the
// keys store's hash tag (so that one script may touch all of it):
//
//	{<prefix>}:resp:<id>    record (appendRecord), expiring at the retention
//	{<prefix>}:resp-index   sorted set: id scored by its creation in unix ms
//
// The records expire on their own (PX); the index is trimmed of expired ids
// and, past MaxIDs, of the oldest (whose records go with them) by each
// Remember, in one script.
type ValkeyStore struct {
	c          valkey.Client
	o          Options
	timeout    time.Duration
	recordName string // "{<prefix>}:resp:"
	indexName  string
}

// NewValkey returns the Valkey store on c, a client the caller owns (the key
// store's), under prefix, each call bounded by timeout.
func NewValkey(c valkey.Client, prefix string, timeout time.Duration, o Options) *ValkeyStore {
	tag := valkeyx.Tag(valkeyx.Prefix(prefix))
	return &ValkeyStore{c: c, o: o.withDefaults(), timeout: valkeyx.Timeout(timeout),
		recordName: tag + ":resp:", indexName: tag + ":resp-index"}
}

// rememberScript is Remember in one atomic step. Running it twice has the
// effect of running it once, so valkey-go may retry it after a broken
// connection.
//
//	KEYS: the record, the index
//	ARGV: record, retention in ms, now in unix ms, id, expiry cut-off in
//	      unix ms (ids created at or before it are expired), MaxIDs, the
//	      prefix of record names
//	returns how many ids it forgot to stay under MaxIDs
var rememberScript = valkey.NewLuaScriptRetryable(`
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[6])
if over <= 0 then
  return 0
end
local old = redis.call('ZPOPMIN', KEYS[2], over)
for i = 1, #old, 2 do
  redis.call('DEL', ARGV[7] .. old[i])
end
return over
`)

// Remember implements Store. It stamps the record with the store's clock.
func (s *ValkeyStore) Remember(ctx context.Context, id string, r Record) error {
	if err := checkID(id); err != nil {
		return err
	}
	now := s.o.Now()
	r.Created = now
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ms := now.UnixMilli()
	err := rememberScript.Exec(ctx, s.c, []string{s.recordName + id, s.indexName}, []string{
		string(appendRecord(nil, r)), strconv.FormatInt(s.o.Retention.Milliseconds(), 10),
		strconv.FormatInt(ms, 10), id, strconv.FormatInt(ms-s.o.Retention.Milliseconds(), 10),
		strconv.FormatInt(s.o.MaxIDs, 10), s.recordName,
	}).Error()
	if err != nil {
		return fmt.Errorf("affinity: remember %s: %w", id, err)
	}
	return nil
}

// Lookup implements Store.
func (s *ValkeyStore) Lookup(ctx context.Context, id string) (Record, bool, error) {
	if checkID(id) != nil {
		return Record{}, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	v, err := s.c.Do(ctx, s.c.B().Get().Key(s.recordName+id).Build()).AsBytes()
	if valkey.IsValkeyNil(err) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("affinity: look up %s: %w", id, err)
	}
	r, err := decodeRecord(v)
	if err != nil {
		return Record{}, false, fmt.Errorf("affinity: look up %s: %w", id, err)
	}
	if expired(r, s.o.Now(), s.o.Retention) {
		return Record{}, false, nil
	}
	return r, true, nil
}

// Forget implements Store.
func (s *ValkeyStore) Forget(ctx context.Context, id string) error {
	if checkID(id) != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	for _, r := range s.c.DoMulti(ctx,
		s.c.B().Del().Key(s.recordName+id).Build(),
		s.c.B().Zrem().Key(s.indexName).Member(id).Build()) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("affinity: forget %s: %w", id, err)
		}
	}
	return nil
}

// Close implements Store; the client is the caller's.
func (s *ValkeyStore) Close() error { return nil }
