package main

import (
	"time"
)

// target is one thing the load is driven at, and how to read what it spends.
type target struct {
	name string
	addr string
	// addrs, when set, are several addresses serving as one (gateway nodes
	// sharing a store): the load is spread over them and addr is unused.
	addrs []string
	// procs returns the processes whose CPU time and memory are the
	// target's: nginx's master and workers, tokenhub's nodes and their
	// Valkey. Nil when the target is not measured.
	procs func() []int
	// metrics are the addresses whose GET /metrics count the target's Go
	// heap allocations (tokenhub's), read with adminKey.
	metrics  []string
	adminKey string
}

// pids is a target's procs for a fixed set of processes.
func pids(ps ...*process) func() []int {
	return func() []int {
		ids := make([]int, len(ps))
		for i, p := range ps {
			ids[i] = p.pid()
		}
		return ids
	}
}

// withChildren is a target's procs for a process and its children, read
// afresh each time: nginx's master and its workers.
func withChildren(p *process) func() []int {
	return func() []int { return append([]int{p.pid()}, children(p.pid())...) }
}

// cpu returns the CPU time the target's processes have used so far, and
// false if it cannot be read.
func (t *target) cpu() (time.Duration, bool) {
	if t.procs == nil {
		return 0, false
	}
	var sum time.Duration
	for _, pid := range t.procs() {
		d, err := cpuTime(pid)
		if err != nil {
			return 0, false
		}
		sum += d
	}
	return sum, true
}

// memory returns the target's processes' memory, summed, and false if it
// cannot be read.
func (t *target) memory() (memory, bool) {
	if t.procs == nil {
		return memory{}, false
	}
	var sum memory
	for _, pid := range t.procs() {
		m, err := readMemory(pid)
		if err != nil {
			return memory{}, false
		}
		sum.RSS += m.RSS
		sum.Anon += m.Anon
		sum.Peak += m.Peak
	}
	return sum, true
}

// metric returns the sum of a metric over the target's /metrics, and false
// if the target has none or one of them lacks it.
func (t *target) metric(name string) (float64, bool) {
	if len(t.metrics) == 0 {
		return 0, false
	}
	var sum float64
	for _, addr := range t.metrics {
		v, ok := scrape(addr, t.adminKey, name)
		if !ok {
			return 0, false
		}
		sum += v
	}
	return sum, true
}

// cost is what a target spent on the recorded requests of a run. A nil
// pointer is a measurement that could not be made.
type cost struct {
	// CPUPer10k is the CPU seconds, user and system, of every process of the
	// target per 10,000 requests answered.
	CPUPer10k *float64 `json:"cpu_seconds_per_10k"`
	// PeakRSS is the target's processes' peak resident set (VmHWM) since
	// they started, summed, read after the run.
	PeakRSS int64 `json:"peak_rss_bytes,omitempty"`
	// AllocsPerRequest is the Go heap allocations per request, from the
	// target's go_memstats_mallocs_total (tokenhub's /metrics).
	AllocsPerRequest *float64 `json:"allocs_per_request"`
}

// meter reads a target's CPU time and allocations before and after a run.
type meter struct {
	t         *target
	cpu0      time.Duration
	cpuOK     bool
	mallocs0  float64
	mallocsOK bool
	cpu1      time.Duration
	mallocs1  float64
	ended     bool
}

// begin is a load.Config.OnRecord.
func (m *meter) begin() {
	m.cpu0, m.cpuOK = m.t.cpu()
	m.mallocs0, m.mallocsOK = m.t.metric(metricMallocs)
}

// end is a load.Config.OnRecordEnd.
func (m *meter) end() {
	var ok bool
	m.cpu1, ok = m.t.cpu()
	m.cpuOK = m.cpuOK && ok
	m.mallocs1, ok = m.t.metric(metricMallocs)
	m.mallocsOK = m.mallocsOK && ok
	m.ended = true
}

// cost returns what the target spent on requests, the run's answered
// requests, between begin and end.
func (m *meter) cost(requests uint64) cost {
	var c cost
	if !m.ended || requests == 0 {
		return c
	}
	if m.cpuOK {
		v := (m.cpu1 - m.cpu0).Seconds() / float64(requests) * 10000
		c.CPUPer10k = &v
	}
	if m.mallocsOK {
		v := (m.mallocs1 - m.mallocs0) / float64(requests)
		c.AllocsPerRequest = &v
	}
	if mem, ok := m.t.memory(); ok {
		c.PeakRSS = mem.Peak
	}
	return c
}
