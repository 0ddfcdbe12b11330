package keys

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/valkey-io/valkey-go"
)

// The plan methods of ValkeyStore; the layout is described in valkey.go.

// putPlanScript writes a plan record, adds its name to the set and publishes
// its invalidation. Like putKeyScript it is idempotent, so retryable.
//
//	KEYS: record, set of names
//	ARGV: record, name, invalidation channel, invalidation message
var putPlanScript = valkey.NewLuaScriptRetryable(`
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
`)

// PutPlan implements Store.
func (s *ValkeyStore) PutPlan(ctx context.Context, p *Plan) error {
	if err := copyPlan(p).Compile(); err != nil {
		return fmt.Errorf("keys: valkey: put plan: %w", err)
	}
	rec, err := encodePlan(p)
	if err != nil {
		return err
	}
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("keys: valkey: put plan %s: %w", p.Name, err)
	}
	defer cancel()
	err = putPlanScript.Exec(ctx, s.c, []string{s.planPrefix + p.Name, s.plansSet},
		[]string{string(rec), p.Name, s.channel, PlanInvalidation(p.Name)}).Error()
	if err != nil {
		return fmt.Errorf("keys: valkey: put plan %s: %w", p.Name, err)
	}
	return nil
}

// Plan implements Store.
func (s *ValkeyStore) Plan(ctx context.Context, name string) (*Plan, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("keys: valkey: plan %q: %w", name, ErrNotFound)
	}
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys: valkey: plan %s: %w", name, err)
	}
	defer cancel()
	rec, err := s.c.Do(ctx, s.c.B().Get().Key(s.planPrefix+name).Build()).AsBytes()
	if valkey.IsValkeyNil(err) {
		err = ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("keys: valkey: plan %s: %w", name, err)
	}
	return decodePlan(rec)
}

// Plans implements Store.
func (s *ValkeyStore) Plans(ctx context.Context) ([]*Plan, error) {
	recs, err := s.records(ctx, s.plansSet, s.planPrefix)
	if err != nil {
		return nil, fmt.Errorf("keys: valkey: list plans: %w", err)
	}
	all := make([]*Plan, 0, len(recs))
	for _, rec := range recs {
		p, err := decodePlan(rec)
		if err != nil {
			return nil, err
		}
		all = append(all, p)
	}
	slices.SortFunc(all, func(a, b *Plan) int { return strings.Compare(a.Name, b.Name) })
	return all, nil
}

// deletePlanScript removes a plan record and its name from the set and
// publishes its invalidation, unless unrevoked keys name the plan. It reads
// that from plan-users, which putKeyScript keeps current; on a store that
// has no counts yet it derives them first, in the same atomic step (see
// valkey.go). Key records are read by names built inside, like in
// putKeyScript.
//
//	KEYS: record, set of names, plan-users, plan-users-derived, set of key ids
//	ARGV: name, invalidation channel, invalidation message, prefix of key
//	      record names
//	returns {1} when deleted, {0} when there was no such plan, {2, count}
//	        when count unrevoked keys use it
//
// valkey-go may retry it when a connection breaks. Otherwise the first
// delete after a server restart fails with EOF on the connection the restart
// closed. The price is that in the rare case of a reply lost after the
// delete ran, the retry reports ErrNotFound: the plan is gone either way.
var deletePlanScript = valkey.NewLuaScriptRetryable(`
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('DEL', KEYS[3])
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    local rec = redis.call('GET', ARGV[4] .. id)
    if rec then
      local k = cjson.decode(rec)
      if not k.revoked_at then
        redis.call('HINCRBY', KEYS[3], k.plan, 1)
      end
    end
  end
  redis.call('SET', KEYS[4], '1')
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0}
end
local users = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if users > 0 then
  return {2, users}
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {1}
`)

// DeletePlan implements Store.
func (s *ValkeyStore) DeletePlan(ctx context.Context, name string) error {
	if !ValidName(name) {
		return fmt.Errorf("keys: valkey: delete plan %q: %w", name, ErrNotFound)
	}
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("keys: valkey: delete plan %s: %w", name, err)
	}
	defer cancel()
	res, err := deletePlanScript.Exec(ctx, s.c,
		[]string{s.planPrefix + name, s.plansSet, s.planUsers, s.derived, s.keysSet},
		[]string{name, s.channel, PlanInvalidation(name), s.keyPrefix}).ToArray()
	if err != nil {
		return fmt.Errorf("keys: valkey: delete plan %s: %w", name, err)
	}
	if len(res) == 0 {
		return fmt.Errorf("keys: valkey: delete plan %s: script returned nothing", name)
	}
	status, err := res[0].AsInt64()
	if err != nil {
		return fmt.Errorf("keys: valkey: delete plan %s: script status: %w", name, err)
	}
	switch status {
	case 1:
		return nil
	case 0:
		return fmt.Errorf("keys: valkey: delete plan %s: %w", name, ErrNotFound)
	case 2:
		var users int64
		if len(res) > 1 {
			users, _ = res[1].AsInt64()
		}
		return fmt.Errorf("keys: valkey: delete plan %s: %w by %d unrevoked keys", name, ErrPlanInUse, users)
	}
	return fmt.Errorf("keys: valkey: delete plan %s: script returned status %d", name, status)
}
