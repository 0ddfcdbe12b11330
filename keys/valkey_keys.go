package keys

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/valkey-io/valkey-go"
)

// The key methods of ValkeyStore; the layout is described in valkey.go.

// hashKey returns the name of the index entry of hash.
func (s *ValkeyStore) hashKey(hash [32]byte) string {
	return s.hashPrefix + hex.EncodeToString(hash[:])
}

// putKeyScript is PutKey in one atomic step. It reads the old record's hash
// to drop its index entry on rotation; that name is not in KEYS because the
// caller cannot know it, which Valkey allows since it carries the same hash
// tag, and so the same slot, as the declared names. It publishes the
// invalidation of every hash it touched from inside the script, so no node
// can read the change before the message is on its way.
//
// It is a compare-and-set on the record's revision ("rev", absent in records
// older than revisions: 0), and refuses to clear a stored revoked_at, so a
// node that read a key before another node revoked it cannot write it back
// unrevoked.
//
//	KEYS: record, new hash index entry, set of ids, the new record's plan
//	      record, plan-users, plan-users-derived
//	ARGV: id, record, prefix of hash index names, invalidation channel,
//	      prefix of key invalidation messages, new hash in hex,
//	      expected stored revision, "1" if the new record is revoked,
//	      the new record's plan name
//	returns {1} when written, {0, owner} when another key owns the hash,
//	        {2, stored revision} on a revision mismatch, {3} when the write
//	        would clear a revocation, {4} when an unrevoked record names a
//	        plan that does not exist
//
// An unrevoked record may be written only onto a plan that exists, checked
// in the same step, so a concurrent plan delete either sees this key in the
// plan's count of unrevoked keys (plan-users, see valkey.go) or happens
// first and makes this write fail.
//
// Running it twice has the effect of running it once: a second run finds
// exactly the record it would write, down to the random id of the write
// (so an identical record from another writer does not count), and only
// reports success. So valkey-go may retry it when a connection breaks, as it
// does after a server restart, without turning an applied write into a
// reported conflict.
var putKeyScript = valkey.NewLuaScriptRetryable(`
local old = redis.call('GET', KEYS[1])
if old == ARGV[2] then
  return {1}
end
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then
  return {0, owner}
end
local prev = nil
local rev = 0
if old then
  prev = cjson.decode(old)
  rev = prev.rev or 0
end
if rev ~= tonumber(ARGV[7]) then
  return {2, rev}
end
if prev and prev.revoked_at and ARGV[8] ~= '1' then
  return {3}
end
if ARGV[8] ~= '1' and redis.call('EXISTS', KEYS[4]) == 0 then
  return {4}
end
if redis.call('EXISTS', KEYS[6]) == 1 then
  if prev and not prev.revoked_at then
    if redis.call('HINCRBY', KEYS[5], prev.plan, -1) <= 0 then
      redis.call('HDEL', KEYS[5], prev.plan)
    end
  end
  if ARGV[8] ~= '1' then
    redis.call('HINCRBY', KEYS[5], ARGV[9], 1)
  end
end
if prev then
  local oldHex = prev.hash
  if oldHex ~= ARGV[6] then
    local oldIndex = ARGV[3] .. oldHex
    if redis.call('GET', oldIndex) == ARGV[1] then
      redis.call('DEL', oldIndex)
    end
    redis.call('PUBLISH', ARGV[4], ARGV[5] .. oldHex)
  end
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[5] .. ARGV[6])
return {1}
`)

// PutKey implements Store.
func (s *ValkeyStore) PutKey(ctx context.Context, k *Key) error {
	if k.ID == "" {
		return fmt.Errorf("keys: valkey: put key: %w: empty id", ErrInvalidKey)
	}
	var writeID [8]byte
	if _, err := rand.Read(writeID[:]); err != nil {
		return fmt.Errorf("keys: valkey: put key %s: write id: %w", k.ID, err)
	}
	rec, err := encodeKeyWrite(k, hex.EncodeToString(writeID[:]))
	if err != nil {
		return err
	}
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("keys: valkey: put key %s: %w", k.ID, err)
	}
	defer cancel()
	hashHex := hex.EncodeToString(k.Hash[:])
	revoked := "0"
	if !k.RevokedAt.IsZero() {
		revoked = "1"
	}
	res, err := putKeyScript.Exec(ctx, s.c,
		[]string{s.keyPrefix + k.ID, s.hashPrefix + hashHex, s.keysSet, s.planPrefix + k.Plan, s.planUsers, s.derived},
		[]string{k.ID, string(rec), s.hashPrefix, s.channel, msgKey, hashHex,
			strconv.FormatUint(k.Revision, 10), revoked, k.Plan},
	).ToArray()
	if err != nil {
		return fmt.Errorf("keys: valkey: put key %s: %w", k.ID, err)
	}
	if len(res) == 0 {
		return fmt.Errorf("keys: valkey: put key %s: script returned nothing", k.ID)
	}
	status, err := res[0].AsInt64()
	if err != nil {
		return fmt.Errorf("keys: valkey: put key %s: script status: %w", k.ID, err)
	}
	switch status {
	case 1:
		k.Revision++
		return nil
	case 0:
		owner := "?"
		if len(res) > 1 {
			owner, _ = res[1].ToString()
		}
		return fmt.Errorf("keys: valkey: put key %s: %w: hash already belongs to key %s", k.ID, ErrInvalidKey, owner)
	case 2:
		var stored int64
		if len(res) > 1 {
			stored, _ = res[1].AsInt64()
		}
		return fmt.Errorf("keys: valkey: put key %s: %w: revision %d, stored %d", k.ID, ErrConflict, k.Revision, stored)
	case 3:
		return fmt.Errorf("keys: valkey: put key %s: %w: a revoked key cannot be restored", k.ID, ErrRevoked)
	case 4:
		return fmt.Errorf("keys: valkey: put key %s: plan %q: %w", k.ID, k.Plan, ErrPlanNotFound)
	}
	return fmt.Errorf("keys: valkey: put key %s: script returned status %d", k.ID, status)
}

// KeyByID implements Store.
func (s *ValkeyStore) KeyByID(ctx context.Context, id string) (*Key, error) {
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys: valkey: key %s: %w", id, err)
	}
	defer cancel()
	rec, err := s.c.Do(ctx, s.c.B().Get().Key(s.keyPrefix+id).Build()).AsBytes()
	if valkey.IsValkeyNil(err) {
		err = ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("keys: valkey: key %s: %w", id, err)
	}
	return decodeKey(rec)
}

// keyByHashScript reads the index entry and the record it names in one
// atomic step, so a concurrent rotation cannot pair a retired hash with the
// rotated record. The record's name is built inside, like in putKeyScript.
//
//	KEYS: hash index entry
//	ARGV: prefix of record names
//	returns nil when no key has the hash, else {id, record or nil}
var keyByHashScript = valkey.NewLuaScriptReadOnly(`
local id = redis.call('GET', KEYS[1])
if not id then
  return false
end
return {id, redis.call('GET', ARGV[1] .. id)}
`)

// KeyByHash implements Store.
func (s *ValkeyStore) KeyByHash(ctx context.Context, hash [32]byte) (*Key, error) {
	k, err := s.keyByHash(ctx, hash)
	if err != nil {
		// The hash is as good as the secret for tokenhub itself, so the error
		// names only a prefix of it.
		return nil, fmt.Errorf("keys: valkey: key by hash %x…: %w", hash[:4], err)
	}
	return k, nil
}

func (s *ValkeyStore) keyByHash(ctx context.Context, hash [32]byte) (*Key, error) {
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	res, err := keyByHashScript.Exec(ctx, s.c, []string{s.hashKey(hash)}, []string{s.keyPrefix}).ToArray()
	if valkey.IsValkeyNil(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("script returned %d values, want 2", len(res))
	}
	id, _ := res[0].ToString()
	rec, err := res[1].AsBytes()
	if valkey.IsValkeyNil(err) {
		return nil, fmt.Errorf("hash index names key %s, which does not exist", id)
	}
	if err != nil {
		return nil, err
	}
	return decodeKey(rec)
}

// Keys implements Store.
func (s *ValkeyStore) Keys(ctx context.Context) ([]*Key, error) {
	recs, err := s.records(ctx, s.keysSet, s.keyPrefix)
	if err != nil {
		return nil, fmt.Errorf("keys: valkey: list keys: %w", err)
	}
	all := make([]*Key, 0, len(recs))
	for _, rec := range recs {
		k, err := decodeKey(rec)
		if err != nil {
			return nil, err
		}
		all = append(all, k)
	}
	SortKeys(all)
	return all, nil
}
