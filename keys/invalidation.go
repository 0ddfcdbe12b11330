package keys

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
)

// PubSub is the channel invalidations travel on between nodes: Valkey pub/sub
// in production. Writes publish their own invalidations (ValkeyStore does so in
// the same script as the write, so no change is ever visible without its
// message); the Invalidator only listens and sends heartbeats.
type PubSub interface {
	// Publish sends msg to every subscriber, this node's included.
	Publish(ctx context.Context, msg string) error
	// Subscribe calls ready once the subscription is in place, then handle
	// for each message, until ctx ends or the subscription breaks.
	Subscribe(ctx context.Context, ready func(), handle func(msg string)) error
}

// Invalidation messages. They are short text so they can be written by a Lua
// script as easily as by Go.
const (
	msgKey       = "k " // + hex SHA-256 of a secret: forget what is cached about it
	msgPlan      = "p " // + plan name: forget the plan
	msgAll       = "a"  // forget everything
	msgHeartbeat = "h"  // proof that the channel works
)

// KeyInvalidation is the message that evicts the secret with this hash.
func KeyInvalidation(hash [32]byte) string { return msgKey + hex.EncodeToString(hash[:]) }

// PlanInvalidation is the message that evicts the named plan.
func PlanInvalidation(name string) string { return msgPlan + name }

// AllInvalidation is the message that empties every node's cache.
const AllInvalidation = msgAll

// InvalidatorOptions tunes an Invalidator. StaleAfter is required (config's
// cache.stale_after holds its default); zero Heartbeat and Retry select
// theirs. With StaleAfter at most 2s, a change made on any node is served
// nowhere for more than about 3 seconds (see Invalidator).
type InvalidatorOptions struct {
	// Heartbeat is how often this node proves the channel works; default 500ms.
	Heartbeat time.Duration
	// StaleAfter is the age past which cached entries are re-read while the
	// channel is not known to work; required.
	StaleAfter time.Duration
	// Retry is the pause before subscribing again after the subscription
	// broke; default 250ms.
	Retry  time.Duration
	Logger *slog.Logger
}

// Invalidator keeps a Registry's cache coherent with writes made on other
// nodes. While its subscription works (a heartbeat arrived within three
// heartbeat intervals) cache entries live until a message evicts them, so the
// common case makes no store round trip. When the subscription breaks or lags,
// the Registry re-reads any entry older than StaleAfter, and when the
// subscription comes back every entry is marked for re-reading, since
// messages may have been lost meanwhile. A change thus reaches every node within at most
// 3*Heartbeat + StaleAfter (2.5s with the default Heartbeat and config's
// default StaleAfter of 1s) even with pub/sub down.
type Invalidator struct {
	reg  *Registry
	ps   PubSub
	opts InvalidatorOptions
	log  *slog.Logger

	subscribed atomic.Bool
	lastMsg    atomic.Int64 // unix nanoseconds of the last message received
	healthy    atomic.Bool
}

// NewInvalidator returns an Invalidator for reg listening on ps; Run starts it.
func NewInvalidator(reg *Registry, ps PubSub, opts InvalidatorOptions) (*Invalidator, error) {
	if opts.StaleAfter <= 0 {
		return nil, fmt.Errorf("keys: new invalidator: stale-after %v: must be positive", opts.StaleAfter)
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 500 * time.Millisecond
	}
	if opts.Retry <= 0 {
		opts.Retry = 250 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	// Until the first subscription is in place, nothing guarantees coherence.
	reg.SetMaxAge(opts.StaleAfter)
	return &Invalidator{reg: reg, ps: ps, opts: opts, log: opts.Logger}, nil
}

// Healthy reports whether invalidations are currently known to arrive.
func (iv *Invalidator) Healthy() bool { return iv.healthy.Load() }

// Run listens and sends heartbeats until ctx ends, subscribing again whenever
// the subscription breaks.
func (iv *Invalidator) Run(ctx context.Context) {
	go iv.heartbeats(ctx)
	for ctx.Err() == nil {
		err := iv.ps.Subscribe(ctx, iv.ready, iv.handle)
		iv.subscribed.Store(false)
		iv.setHealthy(false)
		if ctx.Err() != nil {
			return
		}
		iv.log.Warn("invalidation subscription lost; re-reading cache entries older than stale_after until it is back",
			"err", err, "stale_after", iv.opts.StaleAfter.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(iv.opts.Retry):
		}
	}
}

// ready runs once a subscription is in place: whatever was published while
// there was none is unknown, so everything cached is read again before use
// (but kept, to be served stale if the store fails meanwhile).
func (iv *Invalidator) ready() {
	iv.reg.MarkAllStale()
	iv.lastMsg.Store(time.Now().UnixNano())
	iv.subscribed.Store(true)
	iv.check()
	iv.log.Info("invalidation subscription ready; cached entries marked for re-reading")
}

func (iv *Invalidator) handle(msg string) {
	iv.lastMsg.Store(time.Now().UnixNano())
	// After the message is applied: only then is every change published
	// before it reflected in the cache.
	defer iv.reg.MarkCoherent()
	switch {
	case msg == msgHeartbeat:
	case strings.HasPrefix(msg, msgKey):
		var hash [32]byte
		if n, err := hex.Decode(hash[:], []byte(msg[len(msgKey):])); err != nil || n != len(hash) {
			iv.log.Warn("malformed key invalidation; flushing the cache", "msg", msg)
			iv.reg.EvictAll()
			return
		}
		iv.reg.EvictKeyHash(hash)
	case strings.HasPrefix(msg, msgPlan):
		iv.reg.EvictPlan(msg[len(msgPlan):])
	case msg == msgAll:
		iv.reg.EvictAll()
	default:
		iv.log.Warn("unknown invalidation message; flushing the cache", "msg", msg)
		iv.reg.EvictAll()
	}
}

func (iv *Invalidator) heartbeats(ctx context.Context) {
	t := time.NewTicker(iv.opts.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, iv.opts.Heartbeat)
		if err := iv.ps.Publish(pctx, msgHeartbeat); err != nil && ctx.Err() == nil {
			iv.log.Debug("heartbeat publish failed", "err", err)
		}
		cancel()
		iv.check()
	}
}

// check sets the Registry's staleness bound from the channel's health.
func (iv *Invalidator) check() {
	age := time.Duration(time.Now().UnixNano() - iv.lastMsg.Load())
	iv.setHealthy(iv.subscribed.Load() && age < 3*iv.opts.Heartbeat)
}

func (iv *Invalidator) setHealthy(ok bool) {
	if ok {
		iv.reg.SetMaxAge(0)
	} else {
		iv.reg.SetMaxAge(iv.opts.StaleAfter)
	}
	if iv.healthy.Swap(ok) != ok && !ok {
		iv.log.Warn("invalidations not arriving; bounding cache age", "stale_after", iv.opts.StaleAfter.String())
	}
}
