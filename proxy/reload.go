package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/node"
	"github.com/tokenhub/tokenhub/proxy/upstream"
)

// reloader is the Server's reload state. mu serializes reloads (SIGHUP and
// POST /admin/reload may race) and guards everything below it.
type reloader struct {
	mu sync.Mutex
	// cfg is the configuration in force: the last one applied, with the
	// fields that need a restart kept at their values from the start.
	cfg *config.Config
	// load reads the configuration file again.
	load func() (*config.Config, error)
	// grace is how long an upstream a reload dropped stays open for the
	// requests that loaded the routing before the swap: server.shutdown_timeout,
	// the time a request is otherwise granted to finish.
	grace   time.Duration
	retired map[*upstream.Upstream]*time.Timer
	closed  bool
}

func (rl *reloader) init(cfg *config.Config) {
	rl.cfg = cfg
	rl.grace = cfg.Server.ShutdownTimeout
	rl.retired = make(map[*upstream.Upstream]*time.Timer)
	file := cfg.File
	rl.load = func() (*config.Config, error) { return config.Load(file) }
}

// retire releases us after the grace period. Call with mu held.
func (rl *reloader) retire(us []*upstream.Upstream) {
	for _, u := range us {
		rl.retired[u] = time.AfterFunc(rl.grace, func() {
			rl.mu.Lock()
			_, ok := rl.retired[u]
			delete(rl.retired, u)
			rl.mu.Unlock()
			if ok { // else closeRetired took it
				u.Release()
			}
		})
	}
}

// retiredUpstreams returns the upstreams still in their grace period.
func (rl *reloader) retiredUpstreams() []*upstream.Upstream {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	out := make([]*upstream.Upstream, 0, len(rl.retired))
	for u := range rl.retired {
		out = append(out, u)
	}
	return out
}

// closeRetired ends reloading and returns the upstreams still in their grace
// period, for the caller to release now.
func (rl *reloader) closeRetired() []*upstream.Upstream {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.closed = true
	var out []*upstream.Upstream
	for u, t := range rl.retired {
		t.Stop()
		out = append(out, u)
	}
	clear(rl.retired)
	return out
}

// ReloadSummary is what a reload applied; POST /admin/reload answers it.
type ReloadSummary struct {
	Object        string   `json:"object"` // "reload"
	Models        []string `json:"models"`
	ModelsAdded   []string `json:"models_added"`
	ModelsRemoved []string `json:"models_removed"`
	Upstreams     []string `json:"upstreams"`
	// UpstreamsRebuilt are the upstreams that are new or whose config
	// changed; the others keep their connections.
	UpstreamsRebuilt []string `json:"upstreams_rebuilt"`
	// PlansSeeded are the file's plans, created or replaced; plans removed
	// from the file stay in the store, as at start.
	PlansSeeded []string `json:"plans_seeded"`
	TLSReloaded bool     `json:"tls_reloaded"`
	// RestartRequired names the changed fields that only a restart applies;
	// they keep their old values meanwhile.
	RestartRequired []string `json:"restart_required"`
}

// invalidConfigError is a reload refused because of the new configuration
// itself, as opposed to a store failure; its message is config.Load's, which
// names each field and its fix.
type invalidConfigError struct{ err error }

func (e *invalidConfigError) Error() string { return e.err.Error() }
func (e *invalidConfigError) Unwrap() error { return e.err }

// Reload reads the configuration file again and applies what can change
// without a restart: upstreams, models, plans (seeded again, as at start)
// and the TLS certificate. The models and upstreams are swapped in one
// atomic step: a request sees the old set or the new, and no connection is
// dropped; upstreams the new set no longer uses are closed after
// server.shutdown_timeout, once the requests holding them are done. An
// invalid file changes nothing: the previous configuration stays in force.
// Changed fields that need a restart (listen, admin.listen, store, ...) are
// logged and keep their old values.
func (s *Server) Reload(ctx context.Context) (*ReloadSummary, error) {
	s.reload.mu.Lock()
	defer s.reload.mu.Unlock()
	sum, err := s.reloadLocked(ctx)
	if err != nil {
		s.log.Error("config reload refused; the previous configuration stays in force", "err", err.Error())
		return nil, err
	}
	for _, f := range sum.RestartRequired {
		s.log.Warn("config reload: this field changed but takes effect only on restart; keeping its old value", "field", f)
	}
	s.log.Info("config reloaded", "models", sum.Models, "models_added", sum.ModelsAdded, "models_removed", sum.ModelsRemoved,
		"upstreams_rebuilt", sum.UpstreamsRebuilt, "plans_seeded", sum.PlansSeeded, "tls_reloaded", sum.TLSReloaded)
	return sum, nil
}

func (s *Server) reloadLocked(ctx context.Context) (*ReloadSummary, error) {
	rl := &s.reload
	if rl.closed {
		return nil, errors.New("proxy: reload: the server is closed")
	}
	next, err := rl.load()
	if err != nil {
		return nil, &invalidConfigError{err}
	}
	prev := rl.cfg
	sum := &ReloadSummary{Object: "reload", RestartRequired: restartOnly(prev, next)}
	next = keepRestartOnly(next, prev)

	var cert *tls.Certificate
	if s.tls != nil {
		if cert, err = loadCertificate(next.TLS); err != nil {
			return nil, &invalidConfigError{err}
		}
	}
	old := s.routing.Load()
	r, err := newRouting(next, old, time.Now().Unix())
	if err != nil {
		return nil, &invalidConfigError{err}
	}
	if err := s.registry.SeedPlans(ctx, node.KeyPlans(next.Plans)); err != nil {
		for _, u := range r.retired(old) { // the upstreams this reload made
			u.Release()
		}
		return nil, err
	}

	s.routing.Store(r)
	if cert != nil {
		s.tls.current.Store(cert)
	}
	rl.retire(old.retired(r))
	rl.cfg = next

	sum.TLSReloaded = cert != nil
	for _, m := range r.models.sorted {
		sum.Models = append(sum.Models, m.name)
		if old.models.byName[m.name] == nil {
			sum.ModelsAdded = append(sum.ModelsAdded, m.name)
		}
	}
	for _, m := range old.models.sorted {
		if r.models.byName[m.name] == nil {
			sum.ModelsRemoved = append(sum.ModelsRemoved, m.name)
		}
	}
	rebuilt := r.retired(old)
	for _, u := range r.upstreams.All() {
		sum.Upstreams = append(sum.Upstreams, u.Name())
	}
	for _, u := range rebuilt {
		sum.UpstreamsRebuilt = append(sum.UpstreamsRebuilt, u.Name())
	}
	for _, p := range next.Plans {
		sum.PlansSeeded = append(sum.PlansSeeded, p.Name)
	}
	sum.nonNil()
	return sum, nil
}

// nonNil makes every list render as [] rather than null.
func (sum *ReloadSummary) nonNil() {
	for _, l := range []*[]string{&sum.Models, &sum.ModelsAdded, &sum.ModelsRemoved, &sum.Upstreams,
		&sum.UpstreamsRebuilt, &sum.PlansSeeded, &sum.RestartRequired} {
		if *l == nil {
			*l = []string{}
		}
	}
}

// restartOnly names the fields that differ between prev and next but are
// read only at start: the listeners, the store and cache, the server's
// limits and timeouts, the log, the admin block, telemetry (the trace
// exporter is the node's, made once), and turning TLS on or off.
// A section is reported field by field ("server.read_timeout").
func restartOnly(prev, next *config.Config) []string {
	var out []string
	f := func(name string, a, b any) {
		if reflect.DeepEqual(a, b) {
			return
		}
		av, bv := reflect.ValueOf(a), reflect.ValueOf(b)
		if av.Kind() != reflect.Struct {
			out = append(out, name)
			return
		}
		for i := range av.NumField() {
			if !reflect.DeepEqual(av.Field(i).Interface(), bv.Field(i).Interface()) {
				key, _, _ := strings.Cut(av.Type().Field(i).Tag.Get("yaml"), ",")
				out = append(out, name+"."+key)
			}
		}
	}
	f("listen", prev.Listen, next.Listen)
	f("admin_key", prev.AdminKey, next.AdminKey)
	f("max_body_bytes", prev.MaxBodyBytes, next.MaxBodyBytes)
	f("server", prev.Server, next.Server)
	f("store", prev.Store, next.Store)
	f("cache", prev.Cache, next.Cache)
	f("log", prev.Log, next.Log)
	f("admin", prev.Admin, next.Admin)
	f("telemetry", prev.Telemetry, next.Telemetry)
	if prev.TLS.Enabled() != next.TLS.Enabled() {
		out = append(out, "tls")
	}
	return out
}

// keepRestartOnly returns next with the fields restartOnly covers set back
// to prev's: the configuration actually in force.
func keepRestartOnly(next, prev *config.Config) *config.Config {
	c := *next
	c.Listen, c.AdminKey, c.MaxBodyBytes = prev.Listen, prev.AdminKey, prev.MaxBodyBytes
	c.Server, c.Store, c.Cache, c.Log, c.Admin = prev.Server, prev.Store, prev.Cache, prev.Log, prev.Admin
	c.Telemetry = prev.Telemetry
	if prev.TLS.Enabled() != next.TLS.Enabled() {
		c.TLS = prev.TLS
	}
	return &c
}

// reloadHandler answers POST /admin/reload: 200 with a ReloadSummary; 400
// invalid_config with config.Load's message when the file is refused (the
// previous configuration stays in force); 503 when the store could not take
// the plans.
func (s *Server) reloadHandler(ctx *fasthttp.RequestCtx) {
	sum, err := s.Reload(s.callCtx(ctx))
	var invalid *invalidConfigError
	switch {
	case errors.As(err, &invalid):
		writeAdminError(ctx, fasthttp.StatusBadRequest, "invalid_config", "",
			"The configuration was not reloaded; the previous one stays in force. "+invalid.Error())
	case err != nil:
		writeError(ctx, errStoreDown, nil)
	default:
		writeJSON(ctx, fasthttp.StatusOK, sum)
	}
}
