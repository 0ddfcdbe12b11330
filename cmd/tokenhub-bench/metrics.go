package main

import (
	"bytes"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// Go runtime metrics tokenhub exposes at GET /metrics, in Prometheus's text
// format: how many heap allocations it has made, and its live heap.
const (
	metricMallocs = "go_memstats_mallocs_total"
	metricHeap    = "go_memstats_heap_alloc_bytes"
)

// scrape reads the sample called name from GET /metrics on addr, sent with
// the admin key in case the endpoint wants it. It reports false when addr
// serves no such metric: not every tokenhub has /metrics.
func scrape(addr, adminKey, name string) (float64, bool) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + "/metrics")
	req.Header.SetMethod(fasthttp.MethodGet)
	if adminKey != "" {
		req.Header.Set("Authorization", "Bearer "+adminKey)
	}
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != fasthttp.StatusOK {
		return 0, false
	}
	return metricValue(resp.Body(), name)
}

// metricValue returns the value of the first sample called name in a
// Prometheus text exposition: a line "name value" or "name{labels} value",
// optionally followed by a timestamp. Comments and other metrics are
// skipped, and so are metrics whose names merely start with name.
func metricValue(text []byte, name string) (float64, bool) {
	for line := range bytes.Lines(text) {
		rest, ok := bytes.CutPrefix(line, []byte(name))
		if !ok || len(rest) == 0 {
			continue
		}
		switch rest[0] {
		case '{':
			end := bytes.LastIndexByte(rest, '}')
			if end < 0 {
				return 0, false
			}
			rest = rest[end+1:]
		case ' ', '\t':
		default:
			continue // a longer name
		}
		f := bytes.Fields(rest)
		if len(f) == 0 {
			return 0, false
		}
		v, err := strconv.ParseFloat(string(f[0]), 64)
		return v, err == nil
	}
	return 0, false
}
