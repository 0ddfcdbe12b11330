package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/tokenhub/tokenhub/bench/load"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// The streaming scenario: what the gateway adds to a stream's first byte and
// to each of its events, and what it holds in memory for each open stream.
const (
	streamingScenario = "streaming"
	// streamingDuration is the recorded time per target unless -duration is
	// given: streams are counted by the thousand in it, and the scenario,
	// three targets and the held streams, ends in about half a minute.
	streamingDuration = 3 * time.Second
	// streamingConns is the streams at a time unless -conns is given. The
	// scenario measures latency, not throughput: with 64 streams at a time
	// on 2 CPUs the mock's own 1ms timers fall behind by a quarter when it
	// is measured directly, and the baseline is no longer one.
	streamingConns = 16
	// maxStreams bounds -streams. Each held stream takes a loopback port
	// twice over (the client's connection and tokenhub's to the mock), of
	// about 28,000 by default.
	maxStreams = 20000
	// holdModel is the model of the held streams, routed to a mock of its own
	// that answers slowly.
	holdModel = "mock-hold"
	// holdChunks and holdInterval shape a held stream: its first events at
	// once, then a word a second, so that it stays open about 11s, longer
	// than opening 10,000 of them takes (about 2s on 2 CPUs). The streams are
	// then read to their end, so that tokenhub ends them as it would any.
	holdChunks   = 10
	holdInterval = time.Second
	// holdTimeout bounds the whole hold: opening the streams and reading them
	// to their end.
	holdTimeout = time.Minute
	// holdOpeners is how many streams are being opened at a time.
	holdOpeners = 64
	// fdsPerStream is the file descriptors a held stream takes in tokenhub
	// (its client's end and its end towards the mock), the most it takes in
	// any one process.
	fdsPerStream = 2
	// fdBase is the file descriptors left for everything but connections in
	// either process: listeners, logs, the store, the runtime's own.
	fdBase = 128
)

// fdReserve is the file descriptors left for everything but the held
// streams in either process: fdBase, and the keep-alive connections left
// from timing conns streams at a time, tokenhub's and nginx's to the mock.
func fdReserve(conns int) uint64 { return uint64(fdBase + 2*conns) }

// streaming starts the mocks, tokenhub and nginx, times streams through each
// in turn, then holds streams open through tokenhub and weighs them. Progress
// goes to logw.
func streaming(ctx context.Context, o *options, logw io.Writer) (*streamingReport, error) {
	if !o.given["duration"] {
		o.duration = streamingDuration
	}
	if !o.given["conns"] {
		o.conns = streamingConns
	}
	if o.duration <= 0 || o.duration > load.MaxDuration {
		return nil, fmt.Errorf("-duration %v: want more than 0 and at most %v", o.duration, load.MaxDuration)
	}
	if o.conns < 1 || o.conns > load.MaxConns {
		return nil, fmt.Errorf("-conns %d: want 1 to %d", o.conns, load.MaxConns)
	}
	if o.maxTokens < 1 {
		return nil, fmt.Errorf("-max-tokens %d: want at least 1", o.maxTokens)
	}
	if o.streams < 0 || o.streams > maxStreams {
		return nil, fmt.Errorf("-streams %d: want 0 to %d", o.streams, maxStreams)
	}
	if o.chunkInterval < 0 || o.chunkInterval > time.Second {
		return nil, fmt.Errorf("-chunk-interval %v: want 0 to 1s", o.chunkInterval)
	}
	sc, err := load.NewScenario("stream", benchModel, o.maxTokens)
	if err != nil {
		return nil, err
	}
	tokenhubBin, nginxBin, notes, err := findBinaries(o)
	if err != nil {
		return nil, err
	}
	rep := &streamingReport{Scenario: streamingScenario, Conns: o.conns, Warmup: o.warmup, Duration: o.duration,
		CPUs: runtime.NumCPU(), Started: time.Now(), Chunks: o.maxTokens, ChunkInterval: o.chunkInterval, Notes: notes}

	streams := o.streams
	var openFiles uint64
	switch {
	case streams == 0:
	case tokenhubBin == "":
		rep.Notes = append(rep.Notes, "memory: not measured (it is tokenhub's, and -tokenhub is empty)")
		streams = 0
	default:
		if _, err := rss(os.Getpid()); err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("memory: not measured (%v)", err))
			streams = 0
			break
		}
		reserve := fdReserve(o.conns)
		need := uint64(streams*fdsPerStream) + reserve
		if openFiles, err = raiseOpenFiles(need); err != nil {
			return nil, err
		}
		if openFiles < need {
			streams = int((max(openFiles, reserve) - reserve) / fdsPerStream)
			rep.Notes = append(rep.Notes, fmt.Sprintf("memory: %d streams held, not the %d asked: the open-file limit is %d, "+
				"a hard limit that only a process with CAP_SYS_RESOURCE can raise, and each stream takes %d descriptors "+
				"in tokenhub, besides %d kept for the rest",
				streams, o.streams, openFiles, fdsPerStream, reserve))
			if streams == 0 {
				rep.Notes = append(rep.Notes, "memory: not measured (no descriptors to spare)")
			}
		}
	}

	dir, err := tempDir()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir) //nolint:errcheck // a temporary directory: nothing to do if it lingers

	mockProc, mockAddr, err := startMock(ctx, dir, "mock", mock.Options{Chunks: o.maxTokens, ChunkInterval: o.chunkInterval})
	if err != nil {
		return nil, err
	}
	defer mockProc.stop(10 * time.Second)
	fmt.Fprintf(logw, "mock serving on %s (%d words %v apart)\n", mockAddr, o.maxTokens, o.chunkInterval)
	routes := []mockRoute{{upstream: "bench", model: benchModel, mockAddr: mockAddr, maxConns: 1024}}
	if streams > 0 {
		holdProc, holdAddr, err := startMock(ctx, dir, "slow-mock", mock.Options{Chunks: holdChunks, ChunkInterval: holdInterval})
		if err != nil {
			return nil, err
		}
		defer holdProc.stop(10 * time.Second)
		fmt.Fprintf(logw, "slow mock serving on %s (%d words %v apart)\n", holdAddr, holdChunks, holdInterval)
		routes = append(routes, mockRoute{upstream: "hold", model: holdModel, mockAddr: holdAddr, maxConns: streams + holdOpeners})
	}
	targets := []*target{{name: "direct", addr: mockAddr, procs: pids(mockProc)}}

	auth := "Bearer sk-bench-direct"
	var th *tokenhub
	var idle int64
	if tokenhubBin != "" {
		if th, err = startTokenhub(ctx, tokenhubBin, dir, "tokenhub", gateway{plan: benchPlan(o.limits), routes: routes}); err != nil {
			return nil, err
		}
		defer th.proc.stop(10 * time.Second)
		fmt.Fprintf(logw, "tokenhub serving on %s\n", th.addr)
		auth = "Bearer " + th.key
		targets = append(targets, th.target("tokenhub"))
		if streams > 0 {
			if idle, err = rss(th.proc.pid()); err != nil {
				return nil, err
			}
		}
	}
	if nginxBin != "" {
		proc, addr, err := startNginx(ctx, nginxBin, dir, mockAddr)
		if err != nil {
			return nil, err
		}
		defer proc.stop(10 * time.Second)
		fmt.Fprintf(logw, "nginx serving on %s\n", addr)
		targets = append(targets, &target{name: "nginx", addr: addr, procs: withChildren(proc)})
	}
	sc.Request.Headers = append(sc.Request.Headers, load.Header{Name: "Authorization", Value: auth})

	for _, t := range targets {
		fmt.Fprintf(logw, "%s: %v warmup, %v with %d streams at a time...\n", t.name, o.warmup, o.duration, o.conns)
		m := &meter{t: t}
		res, err := load.RunStreams(ctx, load.Config{
			Addr: t.addr, Request: sc.Request, Conns: o.conns,
			Warmup: o.warmup, Duration: o.duration, Timeout: o.timeout,
			OnRecord: m.begin, OnRecordEnd: m.end,
		})
		if err = cutShort(ctx, err); err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
		res.Target = t.name
		rep.add(res, m.cost(res.Streams))
		fmt.Fprintf(logw, "%s: %.0f streams/s, first event p50 %s p99 %s, %.1f events in %s, %d errors\n",
			t.name, res.Throughput, ms(res.FirstEvent.P50), ms(res.FirstEvent.P99), res.Events, ms(res.Stream.Mean), res.Errors)
	}

	if streams > 0 {
		m, err := holdStreams(ctx, th, auth, streams, logw)
		if err != nil {
			return nil, err
		}
		m.Asked, m.OpenFilesLimit, m.IdleRSS = o.streams, openFiles, idle
		if m.Open > 0 {
			m.PerStream = (m.RSS - idle) / int64(m.Open)
		}
		rep.Memory = m
		fmt.Fprintf(logw, "tokenhub: RSS %s idle, %s with %d streams open: %s per stream\n",
			mib(m.IdleRSS), mib(m.RSS), m.Open, kib(m.PerStream))
	}
	return rep, nil
}

// holdStreams opens streams slow streams through th at once and reads its
// resident memory when every one has received its first event.
func holdStreams(ctx context.Context, th *tokenhub, auth string, streams int, logw io.Writer) (*memoryResult, error) {
	sc, err := load.NewScenario("stream", holdModel, holdChunks)
	if err != nil {
		return nil, err
	}
	sc.Request.Headers = append(sc.Request.Headers, load.Header{Name: "Authorization", Value: auth})
	pid := th.proc.pid()
	m := &memoryResult{HoldChunks: holdChunks, HoldInterval: holdInterval}
	if m.RSSBefore, err = rss(pid); err != nil {
		return nil, err
	}
	fmt.Fprintf(logw, "tokenhub: opening %d slow streams, %d at a time...\n", streams, holdOpeners)
	var rssErr error
	res, err := load.Hold(ctx, load.HoldConfig{
		Addr: th.addr, Request: sc.Request, Streams: streams, Openers: holdOpeners, Timeout: holdTimeout,
	}, func(open int) {
		m.RSS, rssErr = rss(pid)
		fmt.Fprintf(logw, "tokenhub: %d streams open; reading them to their end...\n", open)
	})
	if err != nil {
		return nil, fmt.Errorf("tokenhub: %w", err)
	}
	if rssErr != nil {
		return nil, rssErr
	}
	res.Target = "tokenhub"
	m.HoldResult = res
	return m, nil
}

// streamingReport is one run of the streaming scenario.
type streamingReport struct {
	Scenario string        `json:"scenario"`
	Conns    int           `json:"conns"`
	Warmup   time.Duration `json:"warmup_ns"`
	Duration time.Duration `json:"duration_ns"`
	CPUs     int           `json:"cpus"`
	Started  time.Time     `json:"started"`
	// Chunks and ChunkInterval are how the mock streams: words per answer,
	// and the gap before each word after the first and before the finish.
	Chunks        int               `json:"chunks"`
	ChunkInterval time.Duration     `json:"chunk_interval_ns"`
	Results       []streamingResult `json:"results"`
	// Memory is tokenhub's, with streams held open; nil when not measured.
	Memory *memoryResult `json:"memory,omitempty"`
	Notes  []string      `json:"notes,omitempty"`
}

// streamingResult is one target's streams, what it adds to the mock's, and
// what it spent on them (per 10,000 streams, and allocations per stream).
type streamingResult struct {
	*load.StreamResult
	cost
	// AddedFirstEventP50 and AddedFirstEventP99 are the target's time to
	// first byte less the mock's, percentile by percentile.
	AddedFirstEventP50 time.Duration `json:"added_first_event_p50_ns"`
	AddedFirstEventP99 time.Duration `json:"added_first_event_p99_ns"`
	// AddedPerEvent is the target's time per event less the mock's.
	AddedPerEvent time.Duration `json:"added_per_event_ns"`
}

// memoryResult is tokenhub's resident memory with streams held open.
type memoryResult struct {
	*load.HoldResult
	// Asked is -streams; HoldResult.Streams is fewer when the open-file
	// limit did not allow as many.
	Asked int `json:"streams_asked"`
	// OpenFilesLimit is the limit this process and tokenhub ran with.
	OpenFilesLimit uint64 `json:"open_files_limit"`
	// HoldChunks and HoldInterval are how the mock sends held streams.
	HoldChunks   int           `json:"hold_chunks"`
	HoldInterval time.Duration `json:"hold_chunk_interval_ns"`
	// IdleRSS is tokenhub's resident memory once started, before any
	// request; RSSBefore is just before the streams were opened, after the
	// streams timed before; RSS is when every held stream had received its
	// first event.
	IdleRSS   int64 `json:"idle_rss_bytes"`
	RSSBefore int64 `json:"rss_before_hold_bytes"`
	RSS       int64 `json:"rss_bytes"`
	// PerStream is (RSS - IdleRSS) / Open.
	PerStream int64 `json:"rss_per_stream_bytes"`
}

// add appends a target's result, computing what it adds to the first's
// (direct).
func (r *streamingReport) add(res *load.StreamResult, c cost) {
	sr := streamingResult{StreamResult: res, cost: c}
	if len(r.Results) > 0 {
		d := r.Results[0].StreamResult
		sr.AddedFirstEventP50 = res.FirstEvent.P50 - d.FirstEvent.P50
		sr.AddedFirstEventP99 = res.FirstEvent.P99 - d.FirstEvent.P99
		sr.AddedPerEvent = res.PerEvent - d.PerEvent
	}
	r.Results = append(r.Results, sr)
}

// writeMarkdown prints the report as three markdown tables, time to first
// byte, time per event and memory per stream, each with a line saying what
// it measures.
func (r *streamingReport) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	events := 0.0
	if len(r.Results) > 0 {
		events = r.Results[0].Events
	}
	fmt.Fprintf(&b, "scenario %s, %d streams at a time, %v per target after a %v warmup, %d CPUs, loopback: "+
		"chat completions streamed by the mock as %d words %v apart, %.0f events with the role, the finish, the usage and [DONE]\n\n",
		r.Scenario, r.Conns, r.Duration, r.Warmup, r.CPUs, r.Chunks, r.ChunkInterval, events)

	b.WriteString("Time to first byte: from sending the request to the read that completed the first event.\n\n")
	b.WriteString("| target | streams | p50 | p90 | p99 | p99.9 | max | errors | added p50 | added p99 |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, res := range r.Results {
		l := res.FirstEvent
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %d | %s | %s |\n",
			res.Target, res.OK, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), res.Errors,
			added(i, res.AddedFirstEventP50), added(i, res.AddedFirstEventP99))
	}

	b.WriteString("\nPer event: the mean stream's time, from sending the request to the read that completed the answer, divided by its events.\n\n")
	b.WriteString("| target | streams/s | events | stream p50 | stream p99 | stream mean | per event | added per event | CPU s/10k streams | peak RSS | allocs/stream |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, res := range r.Results {
		l := res.Stream
		fmt.Fprintf(&b, "| %s | %.0f | %.1f | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			res.Target, res.Throughput, res.Events, ms(l.P50), ms(l.P99), ms(l.Mean), ms(res.PerEvent), added(i, res.AddedPerEvent),
			cpuPer10k(res.CPUPer10k), peak(res.PeakRSS), allocs(res.AllocsPerRequest))
	}

	if m := r.Memory; m != nil {
		fmt.Fprintf(&b, "\nMemory per open stream: tokenhub's resident set (VmRSS) with %d streams opened at once, "+
			"%d at a time, each sent by the mock as %d words %v apart, read when every one had received its first event; "+
			"idle is tokenhub's once started, before any request.\n\n",
			m.Streams, holdOpeners, m.HoldChunks, m.HoldInterval)
		b.WriteString("| target | streams open | idle RSS | RSS | per stream | opened in | errors |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %d |\n",
			m.Target, m.Open, mib(m.IdleRSS), mib(m.RSS), kib(m.PerStream), ms(m.OpenTime), m.Errors)
		fmt.Fprintf(&b, "\nmemory: %s just before the streams opened; opening them, first event p50 %s, p99 %s; open-file limit %d\n",
			mib(m.RSSBefore), ms(m.FirstEvent.P50), ms(m.FirstEvent.P99), m.OpenFilesLimit)
	}

	var errs []string
	for _, res := range r.Results {
		if len(res.ErrorsByKind) > 0 {
			errs = append(errs, fmt.Sprintf("%s errors: %s", res.Target, errorKinds(res.ErrorsByKind)))
		}
	}
	if m := r.Memory; m != nil && len(m.ErrorsByKind) > 0 {
		errs = append(errs, fmt.Sprintf("%s held stream errors: %s", m.Target, errorKinds(m.ErrorsByKind)))
	}
	writeBlock(&b, errs)
	writeBlock(&b, r.Notes)
	_, err := io.WriteString(w, b.String())
	return err
}

// verdict is nil: the streaming scenario makes no promise.
func (r *streamingReport) verdict() error { return nil }

// added formats what row i adds to the first row's value: nothing for the
// first row itself.
func added(i int, d time.Duration) string {
	switch {
	case i == 0:
		return "-"
	case d < 0:
		return "-" + ms(-d)
	}
	return "+" + ms(d)
}

// errorKinds formats error counts by kind, sorted.
func errorKinds(byKind map[string]uint64) string {
	kinds := make([]string, 0, len(byKind))
	for k, n := range byKind {
		kinds = append(kinds, fmt.Sprintf("%s: %d", k, n))
	}
	slices.Sort(kinds)
	return strings.Join(kinds, ", ")
}

// mib formats a size in mebibytes.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// kib formats a size in kibibytes.
func kib(n int64) string { return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10)) }
