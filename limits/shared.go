package limits

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/internal/valkeyx"
	"github.com/tokenhub/tokenhub/limits/journal"
)

// ValkeyOptions configures a Gate whose limits hold across every node that
// shares one Valkey (see NewValkeyGate).
type ValkeyOptions struct {
	// Client is the Valkey to share, normally the key store's client
	// (keys.ValkeyStore.Client). The Gate does not close it.
	Client valkey.Client
	// Prefix namespaces every name, as the key store's does; empty means
	// valkeyx.DefaultPrefix. It must satisfy name.Valid.
	Prefix string
	// Timeout bounds every Valkey call; zero means valkeyx.DefaultTimeout.
	Timeout time.Duration
	// NodeID names this node in Valkey; it must be unique among running
	// nodes. Empty means hostname-pid-random. A stable ID lets a restarted
	// node take back the budget leases it held, instead of waiting LeaseTTL
	// for them to expire.
	NodeID string
	// Nodes, when set, is the number of nodes whose share a node enforces
	// while Valkey is unreachable. Zero learns it from a registry in Valkey
	// that every node heartbeats into every second (from Run).
	Nodes int
	// IdleReturn is how long a node keeps leased rate tokens and budget it
	// does not use before giving them back; zero means 500ms.
	IdleReturn time.Duration
	// LeaseTTL is how long Valkey keeps a silent node's budget lease before
	// another node may reclaim it; a node stops spending from a lease it has
	// not renewed for half of it. Zero means a minute.
	LeaseTTL time.Duration
	// Backoff is how long a node does not call Valkey after a call failed;
	// zero means 500ms.
	Backoff time.Duration
}

// NewValkeyGate returns a Gate whose rate limits and monthly budgets are
// global: every Gate on the same Valkey and prefix enforces the same buckets
// and budgets, and usage is recorded in Valkey (see ValkeyLedger, which Usage
// reads). Run must run, for flushes, lease returns and heartbeats.
//
// Rates. Each key's buckets live in Valkey; a node leases slices of them
// (about a fiftieth of the limit, shrinking to one token near exhaustion) and
// admits from its slice without a round trip, leasing again when the slice
// runs out and giving back what it has not used for IdleReturn. Every
// admitted request was taken from the global bucket, so the sum over nodes
// never exceeds it. A refusal is decided from the global bucket's state at
// the node's last lease until that says a token is due, so requests over the
// limit cost no round trip either. The x-ratelimit headers report the global
// remaining as of this node's last lease (refilled since, but blind to other
// nodes' use) plus this node's slice: an approximation that is exact with
// one node.
//
// Budgets. Before a request goes upstream its worst case is reserved against
// a lease of the month's budget this node holds in Valkey; when the lease
// falls short the node leases more, atomically against cap − spent − every
// node's lease, so spend cannot pass the cap however requests interleave
// over nodes. Leases are slices of about a fiftieth of the cap, shrinking
// near it until every reservation is decided in Valkey. Settling turns the
// real cost into spend (flushed every Run interval) and frees the rest.
//
// When Valkey is unreachable (a call failed within Backoff), a node
//   - admits against rates from what is left of its slices, then enforces
//     its share of each limit on a local bucket: limit / live nodes (at
//     least 1 a minute), live nodes being ValkeyOptions.Nodes or else the
//     registry's count as last seen (1 if never seen); the share's bucket
//     starts full, and headers then report the share;
//   - admits against budgets only what the budget it already leased covers,
//     and only for LeaseTTL/2 after it last reached Valkey; any other
//     request of a key with a monthly budget is refused with
//     RefusedUnavailable. Usage settled meanwhile is kept and recorded once
//     Valkey answers again.
//
// A node cut off for longer than LeaseTTL may see its lease reclaimed by
// others; spend it settled against that lease but could not record is then
// recorded on top, so the cap can be passed by at most one lease per such
// node. Clocks: rate buckets run on the nodes' clocks (the time passed to
// Admit), so nodes should run NTP; a skew of d admits about d × rate extra.
func NewValkeyGate(o ValkeyOptions, log *slog.Logger) (*Gate, error) {
	ledger, err := NewValkeyLedger(o.Client, o.Prefix, o.Timeout)
	if err != nil {
		return nil, err
	}
	if o.NodeID == "" {
		o.NodeID = defaultNodeID()
	}
	if o.IdleReturn == 0 {
		o.IdleReturn = 500 * time.Millisecond
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = time.Minute
	}
	if o.Backoff == 0 {
		o.Backoff = 500 * time.Millisecond
	}
	switch {
	case o.Nodes < 0:
		return nil, fmt.Errorf("limits: valkey: nodes %d is negative", o.Nodes)
	case o.IdleReturn < 0 || o.Backoff < 0:
		return nil, errors.New("limits: valkey: idle return and backoff must not be negative")
	case o.LeaseTTL < 4*time.Second:
		return nil, fmt.Errorf("limits: valkey: lease TTL %v is under 4s; renewals could not keep up", o.LeaseTTL)
	}
	if log == nil {
		log = slog.Default()
	}
	g := &Gate{log: log}
	base := time.Now()
	sh := &shared{
		ledger:   ledger,
		keys:     &g.keys,
		log:      log,
		node:     o.NodeID,
		nodesKey: valkeyx.Tag(ledger.prefix) + ":limits:nodes",
		fixed:    int64(o.Nodes),
		idle:     int64(o.IdleReturn),
		ttl:      int64(o.LeaseTTL),
		backoff:  int64(o.Backoff),
		now:      time.Now,
		base:     base,
	}
	sh.ttlMs = strconv.FormatInt(o.LeaseTTL.Milliseconds(), 10)
	g.strategy = sh
	return g, nil
}

func defaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}

// Timing of the node registry.
const (
	heartbeatEvery = time.Second
	// liveWindow is how long a node counts as live after its last heartbeat.
	liveWindow = 3 * heartbeatEvery
)

// errBackingOff is returned instead of calling Valkey during a backoff.
var errBackingOff = errors.New("limits: valkey unreachable; backing off")

// shared is the strategy of a Gate made by NewValkeyGate: limits are kept in
// Valkey, and this node holds slices and leases of them (see NewValkeyGate).
// Its plain fields are set when it is made (journal by UseJournal, before
// serving) and only read after; the others say what guards them.
type shared struct {
	ledger   *ValkeyLedger
	keys     *sync.Map // the Gate's, key id → *keyState
	log      *slog.Logger
	node     string
	nodesKey string
	fixed    int64 // ValkeyOptions.Nodes
	ttlMs    string
	// Durations in nanoseconds of clock.
	idle, ttl, backoff int64

	// now is the time (time.Now outside tests); clock is its monotonic
	// reading since base, in nanoseconds.
	now  func() time.Time
	base time.Time

	journal *journal.Journal // Gate.journal, when set

	live      atomic.Int64 // the registry's count of live nodes, as last seen
	downUntil atomic.Int64 // clock before which Valkey is not called
	down      atomic.Bool  // whether the outage has been logged
	seq       atomic.Int64 // the last usage record's sequence number

	syncMu sync.Mutex // held by sync, so that one runs at a time; taken before any key's net
}

func (sh *shared) newKey(s *keyState)            { s.sh = &sharedKey{acct: &account{}} }
func (sh *shared) useJournal(j *journal.Journal) { sh.journal = j }

// flush records usage and returns what is idle (see Gate.Flush).
func (sh *shared) flush(ctx context.Context) error { return sh.sync(ctx, true, false) }

func (sh *shared) clock() int64 { return int64(sh.now().Sub(sh.base)) }

// sharedKey is a key's state in a shared Gate. net is held across each of the
// key's Valkey calls, so that they happen one at a time and each reply can be
// taken as the truth; it is taken before keyState.mu. Every other field is
// guarded by the keyState's mu, which is never held across a call.
type sharedKey struct {
	net      sync.Mutex
	req, tok slice
	// rpm and tpm are the limits last admitted with, for returns.
	rpm, tpm int64
	lastUse  int64 // clock
	acct     *account
	// ended are accounts of past months still to be settled in Valkey.
	ended []*account
}

// slice is what a node holds of one global bucket.
type slice struct {
	// n is the tokens leased and not yet used; negative is a debt (a
	// request used more than its estimate) charged at the next lease.
	n int64
	// tat is the global bucket's theoretical arrival time (unix ns) as of
	// the last reply; 0 before any.
	tat int64
}

// size is the slice leased beyond a need: a fiftieth of the limit.
func sliceSize(limit int64) int64 { return max(limit/50, 1) }

// returnable is what a sync gives back of a slice holding n of a bucket of
// limit: all of it when idle, and a debt at any time.
func returnable(n, limit int64, idle bool) int64 {
	if limit == 0 || n > 0 && !idle {
		return 0
	}
	return n
}

// remaining reports the slice and the global bucket as of the last reply,
// refilled since.
func (sl *slice) state(limit, now int64) RateState {
	used := max(sl.tat-now, 0)
	global := max(min((minute-used)/interval(limit), limit), 0)
	return RateState{Limit: limit, Remaining: max(min(global+sl.n, limit), 0), Reset: time.Duration(used)}
}

// refuses says whether the global bucket as last seen cannot yet spare need
// tokens, and for how long.
func (sl *slice) refuses(limit, need, now int64) (bool, time.Duration) {
	if sl.tat == 0 {
		return false, 0
	}
	over := max(sl.tat, now) + need*interval(limit) - now - minute
	return over > 0, time.Duration(over)
}

// account is this node's side of one key-month in Valkey.
type account struct {
	month Month
	// lease is what Valkey holds for this node, as last confirmed, less
	// what was given back since; the part not reserved or spent is free.
	lease usd.Pico
	// until is the clock before which the lease may be spent: half a lease
	// TTL after the last call Valkey confirmed was sent; 0 before any.
	until int64
	// inflight is a usage record sent with seq and not yet confirmed; it
	// is sent again, with the same seq, until it is.
	inflight *MonthUsage
	seq      int64
	// pending is the usage of an ended month not yet sent; closed says an
	// ended month is settled: its usage recorded, its lease given back.
	pending *MonthUsage
	closed  bool
	// refused is Valkey's last refusal of a grant.
	refused struct {
		until int64    // clock until which it stands
		cap   usd.Pico // the cap it was refused under
		room  usd.Pico // what the cap left then, beyond every lease
	}
}

func (a *account) unconfirmed() usd.Pico {
	if a.inflight == nil {
		return 0
	}
	return a.inflight.Spent
}

// free is what s's lease has left for new reservations.
func (s *keyState) free() usd.Pico {
	a := s.sh.acct
	return a.lease - s.reserved - s.pending.Spent - a.unconfirmed()
}

// covers says whether s's lease can take a reservation of r now: it has r
// free, and (for anything to reserve) Valkey confirmed it recently enough.
func (s *keyState) covers(r usd.Pico, clk int64) bool {
	return s.free() >= r && (r <= 0 || s.sh.acct.valid(clk))
}

// valid says whether a node may still spend from a lease: Valkey confirmed
// it less than half a lease TTL ago.
func (a *account) valid(clk int64) bool { return clk < a.until }

func (sh *shared) isDown(clk int64) bool { return clk < sh.downUntil.Load() }

// failed starts a backoff after a failed call, unless the caller gave up
// (its context ended), which says nothing about Valkey.
func (sh *shared) failed(ctx context.Context, log *slog.Logger, err error) {
	if ctx.Err() != nil {
		return
	}
	sh.downUntil.Store(sh.clock() + sh.backoff)
	if !sh.down.Swap(true) {
		log.Warn("limits: valkey unreachable; enforcing this node's share of rate limits and only budget already leased", "err", err)
	}
}

func (sh *shared) succeeded(log *slog.Logger) {
	if sh.down.Load() && sh.down.Swap(false) {
		log.Info("limits: valkey reachable again; limits are global again")
	}
}

// nodes is the node count the fallback divides limits by.
func (sh *shared) nodes() int64 {
	if sh.fixed > 0 {
		return sh.fixed
	}
	return max(sh.live.Load(), 1)
}

func share(limit, nodes int64) int64 { return max(limit/nodes, 1) }

// recordSeq is the sequence number a usage record is sent with, which
// Valkey applies once per node and key-month: with a journal, the seq of
// the newest journal record it holds, so that replay can tell what Valkey
// applied; without, a clock-based one.
func (sh *shared) recordSeq(u *MonthUsage) int64 {
	if sh.journal == nil {
		return sh.nextSeq()
	}
	if u.Seq > 0 {
		return u.Seq
	}
	// None of its settles reached the journal (appends failed, and said
	// so): a seq above every record's so far, none of which it holds.
	return sh.journal.Next()
}

func (sh *shared) nextSeq() int64 {
	for {
		last := sh.seq.Load()
		n := max(last+1, time.Now().UnixMicro())
		if sh.seq.CompareAndSwap(last, n) {
			return n
		}
	}
}

// needs is what a request lacks on this node.
type needs struct {
	budget   bool  // the lease cannot cover the worst case (or is stale)
	req, tok int64 // tokens short in each slice
}

func (n needs) none() bool { return !n.budget && n.req == 0 && n.tok == 0 }

func (sh *shared) needs(s *keyState, a *Admission, clk int64) needs {
	var n needs
	k, l := s.sh, &a.Limits
	if l.Monthly > 0 && !s.covers(a.reserve(), clk) {
		n.budget = true
	}
	if l.RPM > 0 && k.req.n < 1 {
		n.req = 1 - k.req.n
	}
	if l.TPM > 0 && k.tok.n < a.Tokens {
		n.tok = a.Tokens - k.tok.n
	}
	return n
}

// admit is Admit on a shared Gate: from the slices and lease this node
// holds when they suffice, else from what it leases of Valkey's, else, with
// Valkey unreachable, from the lease it holds and its share of the rates.
func (sh *shared) admit(ctx context.Context, s *keyState, a *Admission, now time.Time, t *Ticket) {
	ns := now.UnixNano()
	if sh.admitHeld(s, a, ns, t) {
		return
	}
	k := s.sh
	k.net.Lock()
	defer k.net.Unlock()
	// Three rounds: between a reply and taking from it, requests holding
	// their own slice may use what it was counted on; each round leases
	// more, so a fourth is all but impossible. The last round only takes
	// in the third's replies.
	var c leaseCall
	for round := range 4 {
		if sh.admitRound(ctx, s, a, ns, t, &c, round == 3) {
			return
		}
		sh.call(ctx, &c)
	}
}

// admitHeld decides a request from what s holds, if it can without a
// Valkey call, and reports whether it did.
func (sh *shared) admitHeld(s *keyState, a *Admission, ns int64, t *Ticket) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rollover(sh, s, t.Month)
	k, l := s.sh, &a.Limits
	clk := sh.clock()
	k.rpm, k.tpm, k.lastUse = l.RPM, l.TPM, clk
	if l.TPM > 0 && a.Tokens > l.TPM {
		t.Refusal, t.RetryAfter = RefusedTokens, time.Duration(minute) // never fits
		sharedStates(s, t, ns)
		return true
	}
	return sh.decideHeld(s, a, sh.needs(s, a, clk), ns, clk, t)
}

// admitRound takes in the replies of c, if it was made, and decides the
// request from what s then holds; else it makes c the next round's calls.
// It reports whether t is decided; on the last round it is, refused.
func (sh *shared) admitRound(ctx context.Context, s *keyState, a *Admission, ns int64, t *Ticket, c *leaseCall, last bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.made() && sh.applyLease(ctx, s, c, ns, t) {
		return true
	}
	if last || s.month != t.Month { // or the month ended meanwhile
		t.Refusal = RefusedUnavailable
		return true
	}
	clk := sh.clock()
	n := sh.needs(s, a, clk)
	if sh.decideHeld(s, a, n, ns, clk, t) {
		return true
	}
	*c = sh.composeLease(s, a, n, ns, clk)
	return false
}

// decideHeld decides a request lacking n from what s holds, with s.mu
// held: admitted when it lacks nothing, refused when the last replies say
// Valkey would refuse, and by the fallback when Valkey is unreachable. It
// reports whether it decided.
func (sh *shared) decideHeld(s *keyState, a *Admission, n needs, ns, clk int64, t *Ticket) bool {
	switch {
	case n.none():
		takeShared(s, a, ns, t)
	case refuseLocally(s, a, n, ns, clk, t):
	case sh.isDown(clk):
		sh.admitFallback(s, a, ns, t)
	default:
		return false
	}
	return true
}

// extend is Extend on a shared Gate. More is reserved from this node's
// budget lease, leasing more from Valkey when the lease falls short,
// exactly as an admission's budget is, but no rate is charged. With Valkey
// unreachable only the lease held can cover it.
func (sh *shared) extend(ctx context.Context, s *keyState, t *Ticket, more usd.Pico, now time.Time) bool {
	ns := now.UnixNano()
	// pending.KeyID is set when s is made and never changed.
	a := Admission{KeyID: s.pending.KeyID, Model: t.model, Limits: Limits{Monthly: t.limits.Monthly}, Worst: more}
	var refused Ticket // filled in by refusals; the request itself stays admitted
	if decided, ok := sh.extendHeld(s, t, &a, MonthOf(now), ns, &refused); decided {
		return ok
	}
	k := s.sh
	k.net.Lock()
	defer k.net.Unlock()
	var c leaseCall
	for round := range 4 {
		if decided, ok := sh.extendRound(ctx, s, t, &a, ns, &c, &refused, round == 3); decided {
			return ok
		}
		sh.call(ctx, &c)
	}
	return false
}

// extendHeld decides an extension from what s holds, if it can without a
// Valkey call: it reports whether it decided, and if so the outcome.
func (sh *shared) extendHeld(s *keyState, t *Ticket, a *Admission, month Month, ns int64, refused *Ticket) (decided, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rollover(sh, s, month)
	if s.month != t.Month {
		return true, true // a new month began, which owes nothing to the old reservation
	}
	return sh.decideExtend(s, t, a, ns, refused)
}

// extendRound is admitRound for an extension of t by a.Worst.
func (sh *shared) extendRound(ctx context.Context, s *keyState, t *Ticket, a *Admission, ns int64, c *leaseCall, refused *Ticket, last bool) (decided, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.made() && sh.applyLease(ctx, s, c, ns, refused) || last {
		return true, false
	}
	if s.month != t.Month {
		return true, true // the month ended meanwhile; its reservation is gone
	}
	if decided, ok = sh.decideExtend(s, t, a, ns, refused); decided {
		return decided, ok
	}
	*c = sh.composeLease(s, a, needs{budget: true}, ns, sh.clock())
	return false, false
}

// decideExtend decides an extension of t by a.Worst from what s holds, with
// s.mu held, as decideHeld does an admission.
func (sh *shared) decideExtend(s *keyState, t *Ticket, a *Admission, ns int64, refused *Ticket) (decided, ok bool) {
	clk := sh.clock()
	switch {
	case s.covers(a.Worst, clk):
		s.reserved += a.Worst
		t.reserved += a.Worst
		return true, true
	case refuseLocally(s, a, needs{budget: true}, ns, clk, refused), sh.isDown(clk):
		return true, false
	}
	return false, false
}

// refuseLocally refuses a request without a round trip when Valkey refused
// the budget it lacks less than IdleReturn ago (other nodes give back what
// they do not use within that time), or when a global bucket, as last seen
// and refilled since, cannot yet spare what the slice lacks. So a key past
// its limits costs Valkey a call per IdleReturn, or per token refilled, not
// one per request.
func refuseLocally(s *keyState, a *Admission, n needs, ns, clk int64, t *Ticket) bool {
	k, l := s.sh, &a.Limits
	if n.budget {
		if r := &k.acct.refused; clk < r.until && r.cap == l.Monthly.Pico() && a.reserve()-max(s.free(), 0) > r.room {
			t.Refusal, t.Spent, t.Cap = RefusedMonthlyCap, r.cap-r.room, r.cap
			return true
		}
	}
	if n.req > 0 {
		if no, wait := k.req.refuses(l.RPM, n.req, ns); no {
			t.Refusal, t.RetryAfter = RefusedRequests, wait
			sharedStates(s, t, ns)
			return true
		}
	}
	if n.tok > 0 {
		if no, wait := k.tok.refuses(l.TPM, n.tok, ns); no {
			t.Refusal, t.RetryAfter = RefusedTokens, wait
			sharedStates(s, t, ns)
			return true
		}
	}
	return false
}

// leaseCall is one round of asking Valkey for what a request lacks: made
// with the key's mu held (composeLease), sent holding only its net (call),
// and taken in with mu held again (applyLease).
type leaseCall struct {
	bop  *budgetOp
	rop  *rateOp
	berr error // bop's
	err  error // every call's
}

func (c *leaseCall) made() bool { return c.bop != nil || c.rop != nil }

// composeLease makes the calls that ask Valkey for what n says s lacks,
// with s.mu held.
func (sh *shared) composeLease(s *keyState, a *Admission, n needs, ns, clk int64) leaseCall {
	k, l := s.sh, &a.Limits
	var c leaseCall
	if n.budget {
		free := s.free()
		c.bop = sh.budgetOp(s, a.KeyID, k.acct, clk)
		c.bop.need = a.reserve() - free
		c.bop.extra = l.Monthly.Pico() / 50
		c.bop.cap = l.Monthly.Pico()
		c.bop.spare = max(free, 0)
	}
	if n.req > 0 || n.tok > 0 {
		c.rop = &rateOp{s: s, key: sh.ledger.rateKey(a.KeyID), now: ns}
		if l.RPM > 0 {
			c.rop.b[0] = leaseArgs(l.RPM, n.req, k.req.n)
		}
		if l.TPM > 0 {
			c.rop.b[1] = leaseArgs(l.TPM, n.tok, k.tok.n)
		}
	}
	return c
}

// call sends c's calls, with the key's net held and its mu not: the
// budget first, and the rates only when the budget was granted (or not
// needed), so a request refused for money takes no rate.
func (sh *shared) call(ctx context.Context, c *leaseCall) {
	bop, rop := c.bop, c.rop
	var rerr error
	if bop != nil {
		cctx, cancel := context.WithTimeout(ctx, sh.ledger.timeout)
		bop.reply, c.berr = bop.exec(cctx, sh)
		cancel()
	}
	if rop != nil && c.berr == nil && (bop == nil || bop.need <= 0 || bop.reply.granted > 0) {
		cctx, cancel := context.WithTimeout(ctx, sh.ledger.timeout)
		rop.reply, rerr = rop.exec(cctx, sh)
		cancel()
	}
	c.err = errors.Join(c.berr, rerr)
	if c.err != nil {
		sh.failed(ctx, sh.log, c.err)
	} else {
		sh.succeeded(sh.log)
	}
}

// applyLease takes in the replies of c, sent for s, with s.mu held. It
// reports whether t is decided (refused); otherwise the caller looks again
// at what s holds now.
func (sh *shared) applyLease(ctx context.Context, s *keyState, c *leaseCall, ns int64, t *Ticket) bool {
	bop, rop, err := c.bop, c.rop, c.err
	if bop != nil {
		if bop.done(c.berr, sh) == nil && bop.need > 0 && bop.reply.granted == 0 {
			spent := bop.reply.spent + bop.reply.leased
			r := &bop.acct.refused
			r.until, r.cap, r.room = bop.sent+sh.idle, bop.cap, max(bop.cap-spent, 0)
			t.Refusal, t.Spent, t.Cap = RefusedMonthlyCap, spent, bop.cap
			return true
		}
		if c.berr != nil {
			// The refusal may have given the spare back: count it gone
			// until a reply says otherwise.
			bop.acct.lease -= bop.spare
		}
	}
	if rop != nil && err == nil && rop.reply.ok {
		rop.apply()
	} else if rop != nil && err == nil {
		rop.apply()
		if rop.reply.which == 1 {
			t.Refusal = RefusedRequests
		} else {
			t.Refusal = RefusedTokens
		}
		t.RetryAfter = time.Duration(rop.reply.wait)
		sharedStates(s, t, ns)
		return true
	}
	if err != nil && ctx.Err() != nil {
		t.Refusal = RefusedUnavailable // the client is gone
		return true
	}
	return false
}

// takeShared admits a request from what s holds, with s.mu held.
func takeShared(s *keyState, a *Admission, ns int64, t *Ticket) {
	k, l := s.sh, &a.Limits
	if l.RPM > 0 {
		k.req.n--
	}
	if l.TPM > 0 {
		k.tok.n -= a.Tokens
		t.tokSlice = true
	}
	s.reserved += a.reserve()
	t.state, t.reserved = s, a.reserve()
	sharedStates(s, t, ns)
}

func sharedStates(s *keyState, t *Ticket, ns int64) {
	if t.limits.RPM > 0 {
		t.Requests = s.sh.req.state(t.limits.RPM, ns)
	}
	if t.limits.TPM > 0 {
		t.Tokens = s.sh.tok.state(t.limits.TPM, ns)
	}
}

// admitFallback decides a request while Valkey is unreachable, with s.mu
// held: the budget only from the lease, rates from the slices and then from
// this node's share of each limit.
func (sh *shared) admitFallback(s *keyState, a *Admission, ns int64, t *Ticket) {
	k, l := s.sh, &a.Limits
	if l.Monthly > 0 && !s.covers(a.reserve(), sh.clock()) {
		t.Refusal = RefusedUnavailable
		return
	}
	nodes := sh.nodes()
	var reqLimit, tokLimit int64
	if l.RPM > 0 {
		reqLimit = share(l.RPM, nodes)
	}
	if l.TPM > 0 {
		tokLimit = share(l.TPM, nodes)
	}
	states := func() {
		if reqLimit > 0 {
			t.Requests = s.req.State(reqLimit, ns)
		}
		if tokLimit > 0 {
			t.Tokens = s.tok.State(tokLimit, ns)
		}
	}
	fromSlice := false
	if reqLimit > 0 {
		if k.req.n >= 1 {
			k.req.n--
			fromSlice = true
		} else if ok, wait := s.req.Take(reqLimit, 1, ns); !ok {
			t.Refusal, t.RetryAfter = RefusedRequests, wait
			states()
			return
		}
	}
	if tokLimit > 0 {
		if k.tok.n >= a.Tokens {
			k.tok.n -= a.Tokens
			t.tokSlice = true
		} else if ok, wait := s.tok.Take(tokLimit, a.Tokens, ns); ok {
			t.tokLimit = tokLimit
		} else {
			switch {
			case fromSlice:
				k.req.n++
			case reqLimit > 0:
				s.req.Adjust(reqLimit, -1, ns)
			}
			t.Refusal, t.RetryAfter = RefusedTokens, wait
			states()
			return
		}
	}
	s.reserved += a.reserve()
	t.state, t.reserved = s, a.reserve()
	states()
}

// endMonth moves s's account to the ended ones, with its pending usage, for
// the next sync to settle, and opens month's; called by rollover with s.mu
// held.
func (sh *shared) endMonth(s *keyState, month Month) {
	k := s.sh
	if a := k.acct; s.month != 0 {
		if !s.pending.Counts.zero() {
			a.pending = s.pending.clone()
		}
		if a.until != 0 || a.lease != 0 || a.inflight != nil || a.pending != nil {
			k.ended = append(k.ended, a)
		}
	}
	k.acct = &account{month: month}
}

// budgetOp is one call of budgetScript for an account.
type budgetOp struct {
	owner *keyState
	key   string
	acct  *account
	sent  int64 // clock when composed
	seq   int64
	rec   *MonthUsage
	back  usd.Pico
	all   bool
	need  usd.Pico
	extra usd.Pico
	cap   usd.Pico
	spare usd.Pico
	reply budgetReply
}

type budgetReply struct {
	granted, lease, spent, leased usd.Pico
}

// budgetOp starts a call for s's account a, carrying its unconfirmed record.
func (sh *shared) budgetOp(s *keyState, keyID string, a *account, clk int64) *budgetOp {
	return &budgetOp{owner: s, key: sh.ledger.monthKey(keyID, a.month), acct: a, sent: clk, seq: a.seq, rec: a.inflight}
}

func (op *budgetOp) exec(ctx context.Context, sh *shared) (budgetReply, error) {
	res := budgetScript.Exec(ctx, sh.ledger.c, []string{op.key}, op.args(sh))
	return parseBudgetReply(res)
}

func (op *budgetOp) args(sh *shared) []string {
	all := "0"
	if op.all {
		all = "1"
	}
	args := []string{
		sh.node, sh.ttlMs, strconv.FormatInt(op.seq, 10),
		strconv.FormatInt(int64(op.back), 10), all,
		strconv.FormatInt(int64(max(op.need, 0)), 10),
		strconv.FormatInt(int64(op.extra), 10),
		strconv.FormatInt(int64(op.cap), 10),
		strconv.FormatInt(int64(op.spare), 10),
	}
	return usageArgs(args, op.rec)
}

func parseBudgetReply(res valkey.ValkeyResult) (budgetReply, error) {
	var r budgetReply
	vals, err := res.AsStrSlice()
	if err != nil {
		return r, err
	}
	if len(vals) != 4 {
		return r, fmt.Errorf("limits: valkey: budget script returned %d values", len(vals))
	}
	for i, p := range []*usd.Pico{&r.granted, &r.lease, &r.spent, &r.leased} {
		n, err := strconv.ParseInt(vals[i], 10, 64)
		if err != nil {
			return r, fmt.Errorf("limits: valkey: budget script returned %q", vals[i])
		}
		*p = usd.Pico(n)
	}
	return r, nil
}

// done applies the outcome of the call to its account, with the key's lock
// held, and returns err. Valkey's reply is the truth about the lease, since
// the key's calls happen one at a time.
func (op *budgetOp) done(err error, sh *shared) error {
	a := op.acct
	if err != nil {
		return err
	}
	a.lease, a.until = op.reply.lease, op.sent+sh.ttl/2
	if op.seq != 0 && a.seq == op.seq {
		a.inflight, a.seq = nil, 0
	}
	return nil
}

// rateOp is one call of rateScript for a key.
type rateOp struct {
	s     *keyState
	key   string
	now   int64 // unix ns
	b     [2]rateArgs
	reply rateReply
}

type rateArgs struct{ limit, ret, need, ask int64 }

// leaseArgs asks a bucket of limit for the short tokens a slice holding has
// lacks, and a slice more. A debt is charged apart (as a negative return),
// so that the need stays within the limit.
func leaseArgs(limit, short, has int64) rateArgs {
	b := rateArgs{limit: limit}
	if short <= 0 {
		return b
	}
	b.ret = min(has, 0)
	b.need = short + b.ret
	b.ask = b.need + sliceSize(limit)
	return b
}

type rateReply struct {
	ok           bool
	which        int64
	wait         int64
	grant, until [2]int64
}

func (op *rateOp) args() []string {
	args := make([]string, 0, 9)
	args = append(args, strconv.FormatInt(op.now, 10))
	for _, b := range op.b {
		args = append(args, strconv.FormatInt(b.limit, 10), strconv.FormatInt(b.ret, 10),
			strconv.FormatInt(b.need, 10), strconv.FormatInt(b.ask, 10))
	}
	return args
}

func (op *rateOp) exec(ctx context.Context, sh *shared) (rateReply, error) {
	return parseRateReply(rateScript.Exec(ctx, sh.ledger.c, []string{op.key}, op.args()))
}

func parseRateReply(res valkey.ValkeyResult) (rateReply, error) {
	var r rateReply
	vals, err := res.AsIntSlice()
	if err != nil {
		return r, err
	}
	if len(vals) != 7 {
		return r, fmt.Errorf("limits: valkey: rate script returned %d values", len(vals))
	}
	r.ok, r.which, r.wait = vals[0] == 1, vals[1], vals[2]
	r.grant = [2]int64{vals[3], vals[4]}
	r.until = [2]int64{vals[5], vals[6]}
	return r, nil
}

// apply adds a reply's grants to the slices and takes the debts it
// charged off them, with the key's lock held.
func (op *rateOp) apply() {
	k := op.s.sh
	for i, sl := range [2]*slice{&k.req, &k.tok} {
		if op.b[i].limit > 0 {
			sl.n += op.reply.grant[i] - op.b[i].ret
			sl.tat = op.now + op.reply.until[i]
		}
	}
}

// sync sends usage records (when usage is set), gives back slices and
// leases idle for IdleReturn (all of them when final is set), renews leases,
// and settles ended months, for every key in one pipelined call.
func (sh *shared) sync(ctx context.Context, usage, final bool) error {
	sh.syncMu.Lock()
	defer sh.syncMu.Unlock()
	clk := sh.clock()
	if sh.isDown(clk) && !final {
		return errBackingOff
	}
	nowNS := sh.now().UnixNano()
	var (
		// held are the keys with calls in this sync, whose net it holds
		// until their replies are in, so that each reply is the truth.
		held []*keyState
		bops []*budgetOp
		rops []*rateOp
	)
	defer func() {
		for _, s := range held {
			s.sh.net.Unlock()
		}
	}()
	for id, v := range sh.keys.Range {
		s := v.(*keyState)
		s.sh.net.Lock()
		rop, kbops := sh.composeSync(s, id.(string), clk, nowNS, usage, final)
		if rop == nil && len(kbops) == 0 {
			s.sh.net.Unlock()
			continue
		}
		held = append(held, s)
		if rop != nil {
			rops = append(rops, rop)
		}
		bops = append(bops, kbops...)
	}
	if len(held) == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, sh.ledger.timeout)
	var err error
	if len(rops) > 0 {
		execs := make([]valkey.LuaExec, len(rops))
		for i, op := range rops {
			execs[i] = valkey.LuaExec{Keys: []string{op.key}, Args: op.args()}
		}
		for i, res := range rateScript.ExecMulti(cctx, sh.ledger.c, execs...) {
			var e error
			if rops[i].reply, e = parseRateReply(res); e != nil {
				err = e
				rops[i] = nil
			}
		}
	}
	berrs := make([]error, len(bops))
	if len(bops) > 0 {
		execs := make([]valkey.LuaExec, len(bops))
		for i, op := range bops {
			execs[i] = valkey.LuaExec{Keys: []string{op.key}, Args: op.args(sh)}
		}
		for i, res := range budgetScript.ExecMulti(cctx, sh.ledger.c, execs...) {
			if bops[i].reply, berrs[i] = parseBudgetReply(res); berrs[i] != nil {
				err = berrs[i]
			}
		}
	}
	cancel()
	if err != nil {
		sh.failed(ctx, sh.log, err)
	} else {
		sh.succeeded(sh.log)
	}
	for _, op := range rops {
		if op != nil {
			op.applyReturn()
		}
	}
	for i, op := range bops {
		op.finishSync(berrs[i], sh)
	}
	for _, s := range held {
		s.pruneEnded()
	}
	if err != nil {
		return fmt.Errorf("limits: valkey: sync: %w", err)
	}
	return nil
}

// composeSync composes the calls that s needs in a sync, with s.sh.net
// held: a rate call giving back what its slices hold (when idle) or owe,
// and a budget call for its current account (see syncCurrent) and each
// ended one.
func (sh *shared) composeSync(s *keyState, keyID string, clk, nowNS int64, usage, final bool) (*rateOp, []*budgetOp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.sh
	idle := final || clk-k.lastUse >= sh.idle
	var rop *rateOp
	// Unused tokens go back when idle; debts are charged at once.
	retReq := returnable(k.req.n, k.rpm, idle)
	retTok := returnable(k.tok.n, k.tpm, idle)
	if retReq != 0 || retTok != 0 {
		rop = &rateOp{s: s, key: sh.ledger.rateKey(keyID), now: nowNS}
		if k.rpm > 0 {
			rop.b[0] = rateArgs{limit: k.rpm, ret: retReq}
		}
		if k.tpm > 0 {
			rop.b[1] = rateArgs{limit: k.tpm, ret: retTok}
		}
		// Off the slices now: a reply cannot be waited for, and a
		// failed call may still have given them back.
		k.req.n -= retReq
		k.tok.n -= retTok
	}
	var bops []*budgetOp
	if op := sh.syncCurrent(s, keyID, clk, usage, idle); op != nil {
		bops = append(bops, op)
	}
	for _, a := range k.ended {
		bops = append(bops, sh.syncEnded(s, keyID, a, clk))
	}
	return rop, bops
}

// applyReturn takes in the reply to a sync's rate call: the global buckets'
// state. What was given back left the slices when the call was composed.
func (op *rateOp) applyReturn() {
	op.s.mu.Lock()
	defer op.s.mu.Unlock()
	for i, sl := range [2]*slice{&op.s.sh.req, &op.s.sh.tok} {
		if op.b[i].limit > 0 {
			sl.tat = op.now + op.reply.until[i]
		}
	}
}

// finishSync takes in the outcome of a sync's budget call; an account all
// of whose lease went back with nothing unconfirmed is closed.
func (op *budgetOp) finishSync(err error, sh *shared) {
	op.owner.mu.Lock()
	defer op.owner.mu.Unlock()
	if op.done(err, sh) == nil && op.all && op.acct.inflight == nil {
		op.acct.closed = true
	}
}

// pruneEnded drops the ended accounts that are settled: usage recorded and
// lease given back.
func (s *keyState) pruneEnded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.sh
	ended := k.ended[:0]
	for _, a := range k.ended {
		if !a.closed || a.pending != nil {
			ended = append(ended, a)
		}
	}
	clear(k.ended[len(ended):])
	k.ended = ended
}

// syncCurrent composes the call that s's current account needs, if any,
// with s.sh.net and s.mu held.
func (sh *shared) syncCurrent(s *keyState, keyID string, clk int64, usage, idle bool) *budgetOp {
	a := s.sh.acct
	if a.seq == 0 && usage && !s.pending.Counts.zero() {
		a.inflight = s.pending.take()
		a.seq = sh.recordSeq(a.inflight)
	}
	if a.month == 0 {
		return nil // s has not admitted anything yet
	}
	op := sh.budgetOp(s, keyID, a, clk)
	if free := s.free(); idle && free > 0 {
		// With nothing reserved and nothing spent outside this call, all
		// of the lease goes back, even what a lost reply left unknown here.
		op.all = s.reserved == 0 && s.pending.Counts.zero()
		op.back = free
		a.lease -= free
	}
	if op.seq == 0 && op.back == 0 && !(a.lease > 0 && clk >= a.until-sh.ttl/4) {
		return nil
	}
	return op
}

// syncEnded composes the call that settles an ended month's account: its
// unconfirmed record, or its last usage, with all of its lease given back.
func (sh *shared) syncEnded(s *keyState, keyID string, a *account, clk int64) *budgetOp {
	if a.seq == 0 && a.pending != nil {
		a.inflight, a.seq, a.pending = a.pending, sh.recordSeq(a.pending), nil
	}
	op := sh.budgetOp(s, keyID, a, clk)
	op.all = a.pending == nil
	a.lease = 0
	return op
}

// run is Run on a shared Gate: every tick (the interval, or half of
// IdleReturn if shorter) it gives back idle slices and leases and renews
// leases, every interval it records usage, and every second it heartbeats.
// When ctx ends it records everything and gives every lease and slice back,
// and leaves the registry, so the other nodes can use them at once.
// Usage is recorded by flush (Gate.Flush), which lets the journal recycle
// what Valkey then holds; the ticks between only sync rates and leases.
func (sh *shared) run(ctx context.Context, interval time.Duration, flush func(context.Context) error) {
	tick := min(interval, time.Duration(sh.idle/2))
	if tick <= 0 {
		tick = interval
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	sh.heartbeat(ctx, true)
	lastFlush, lastBeat := time.Now(), time.Now()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := sh.sync(fctx, true, true); err != nil {
				sh.log.Error("limits: final sync failed; usage since the last flush is lost, leases expire in their TTL", "err", err)
			}
			sh.heartbeat(fctx, false)
			cancel()
			return
		case now := <-t.C:
			if now.Sub(lastBeat) >= heartbeatEvery-tick/2 {
				lastBeat = now
				sh.heartbeat(ctx, true)
			}
			var err error
			if now.Sub(lastFlush) >= interval-tick/2 {
				lastFlush = now
				err = flush(ctx)
			} else {
				err = sh.sync(ctx, false, false)
			}
			if err != nil && !errors.Is(err, errBackingOff) {
				sh.log.Warn("limits: sync failed; will retry", "err", err)
			}
		}
	}
}

// heartbeat registers this node as live (or, leaving, removes it) and
// learns how many nodes are; with ValkeyOptions.Nodes set it does nothing.
func (sh *shared) heartbeat(ctx context.Context, alive bool) {
	if sh.fixed > 0 {
		return
	}
	clk := sh.clock()
	if alive && sh.isDown(clk) {
		return
	}
	flag := "0"
	if alive {
		flag = "1"
	}
	cctx, cancel := context.WithTimeout(ctx, sh.ledger.timeout)
	defer cancel()
	n, err := heartbeatScript.Exec(cctx, sh.ledger.c, []string{sh.nodesKey},
		[]string{sh.node, flag, strconv.FormatInt(liveWindow.Milliseconds(), 10)}).AsInt64()
	if err != nil {
		sh.failed(ctx, sh.log, err)
		return
	}
	if alive {
		sh.live.Store(max(n, 1))
	}
}

// usage is Usage on a shared Gate: Valkey's record plus what this node has
// not recorded yet, counting a record Valkey already applied once.
func (sh *shared) usage(ctx context.Context, keyID string, month Month) (*Report, error) {
	u, seq, err := sh.ledger.load(ctx, keyID, month, sh.node)
	if err != nil {
		return nil, err
	}
	r := &Report{Month: month, Usage: u}
	v, ok := sh.keys.Load(keyID)
	if !ok {
		return r, nil
	}
	s := v.(*keyState)
	s.mu.Lock()
	defer s.mu.Unlock()
	add := func(a *account) {
		if a.month != month {
			return
		}
		if a.inflight != nil && a.seq > seq {
			r.Usage.add(a.inflight)
		}
		if a.pending != nil {
			r.Usage.add(a.pending)
		}
	}
	for _, a := range s.sh.ended {
		add(a)
	}
	add(s.sh.acct)
	if s.month == month {
		r.Usage.add(&s.pending)
		r.Reserved = s.reserved
	}
	return r, nil
}
