package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/bench/load"
)

// The ratelimit scenario: a plan allowing L requests a second, offered 2L in
// an open loop. Half must be refused, each with OpenAI's 429, and the
// admitted rate must be L.
const (
	rateLimitScenario = "ratelimit"
	// tokensPerRequestBound is far above what one request of the scenario
	// is charged (its prompt bytes / 4 + 8, plus max_tokens), so the plan's
	// tpm, set from it, is enforced without ever being the binding limit.
	tokensPerRequestBound = 1000
	// admittedTolerance is how far the admitted rate may be from the limit,
	// as a fraction of it, beyond one request's worth over the window.
	admittedTolerance = 0.05
	// maxPerMinute is the most a plan's rpm or tpm may be.
	maxPerMinute = 1_000_000_000
	// maxDrainRounds bounds the rounds that empty the bucket.
	maxDrainRounds = 20
)

// rateLimitRefusal is what every refusal of the scenario must be: OpenAI's
// 429 for requests per minute, with the headers the official SDKs read.
var rateLimitRefusal = load.Refusal{
	Status: fasthttp.StatusTooManyRequests,
	Expect: [][]byte{[]byte(`"type":"requests"`), []byte(`"code":"rate_limit_exceeded"`), []byte(`"param":null`), []byte(`"message":"`)},
	Headers: []string{"Retry-After", "Retry-After-Ms", "X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests",
		"X-Ratelimit-Reset-Requests", "X-Request-Id"},
}

// rateLimitReport is one run of the ratelimit scenario.
type rateLimitReport struct {
	Scenario string        `json:"scenario"`
	LimitRPS int           `json:"limit_rps"`
	RPM      int64         `json:"rpm"`
	TPM      int64         `json:"tpm"`
	Offered  float64       `json:"offered_rps"`
	Warmup   time.Duration `json:"warmup_ns"`
	Duration time.Duration `json:"duration_ns"`
	CPUs     int           `json:"cpus"`
	Started  time.Time     `json:"started"`
	// Drain is the closed loop that emptied the bucket, which starts with
	// a minute's worth, before the open loop.
	Drain *load.Result `json:"drain"`
	// Open is the open loop at twice the limit.
	Open *load.OpenResult `json:"open"`
	cost
	// Admitted is the correct answers per second of the open loop, and
	// RefusedShare the share of its requests refused.
	Admitted     float64 `json:"admitted_rps"`
	RefusedShare float64 `json:"refused_share"`
	// Sample is one refusal, read whole after the open loop.
	Sample   refusalSample `json:"sample_refusal"`
	Problems []string      `json:"problems,omitempty"`
}

// refusalSample is one 429, as sent.
type refusalSample struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// rateLimit runs the ratelimit scenario.
func rateLimit(ctx context.Context, o *options, logw io.Writer) (*rateLimitReport, error) {
	if err := o.checkThroughput(); err != nil {
		return nil, err
	}
	tokenhubBin, err := needTokenhub(o, rateLimitScenario)
	if err != nil {
		return nil, err
	}
	limit := int64(o.limitRPS)
	rep := &rateLimitReport{Scenario: rateLimitScenario, LimitRPS: o.limitRPS, RPM: 60 * limit, TPM: min(60*limit*tokensPerRequestBound, maxPerMinute),
		Offered: float64(2 * limit), Warmup: o.warmup, Duration: o.duration, CPUs: runtime.NumCPU(), Started: time.Now()}
	st, err := startStack(ctx, logw, stackSpec{tokenhubBin: tokenhubBin, gw: gateway{plan: planRate(rep.RPM, rep.TPM)}})
	if err != nil {
		return nil, err
	}
	defer st.close()
	th := st.targets[1]
	sc, err := load.NewScenario("chat", benchModel, o.maxTokens)
	if err != nil {
		return nil, err
	}
	req := sc.Request
	req.Headers = append(req.Headers, load.Header{Name: "Authorization", Value: "Bearer " + st.key()})
	req.Refusal = rateLimitRefusal

	// The bucket holds a minute's worth: empty it first, or the open loop
	// would be admitted whole. Rounds of requests as fast as tokenhub
	// answers, until one is mostly refused: the bucket is then at the
	// bottom, only refilling.
	fmt.Fprintf(logw, "tokenhub: emptying the bucket of %d requests...\n", rep.RPM)
	rep.Drain = &load.Result{Target: th.name, Conns: o.conns}
	for round := 0; ; round++ {
		n := rep.RPM + 10*limit
		if round > 0 {
			n = max(rep.RPM/10, 10*limit)
		}
		res, err := load.Run(ctx, load.Config{Addr: th.addr, Request: req, Conns: o.conns, Requests: uint64(n), Timeout: o.timeout})
		if err = cutShort(ctx, err); err != nil {
			return nil, fmt.Errorf("tokenhub: emptying the bucket: %w", err)
		}
		d := rep.Drain
		d.Requests, d.OK, d.Refused, d.Errors, d.Elapsed = d.Requests+res.Requests, d.OK+res.OK, d.Refused+res.Refused, d.Errors+res.Errors, d.Elapsed+res.Elapsed
		if res.Errors > 0 {
			return nil, fmt.Errorf("tokenhub: emptying the bucket: %d errors (%s)", res.Errors, errorKinds(res.ErrorsByKind))
		}
		if 2*res.Refused >= res.Requests {
			break
		}
		if round == maxDrainRounds {
			return nil, fmt.Errorf("tokenhub: %d requests against an rpm of %d, and still most are admitted (%d of the last %d)",
				d.Requests, rep.RPM, res.OK, res.Requests)
		}
	}

	fmt.Fprintf(logw, "tokenhub: open loop, %v warmup, %v at %.0f req/s against a limit of %d/s...\n", o.warmup, o.duration, rep.Offered, limit)
	m := &meter{t: th}
	rep.Open, err = load.RunOpen(ctx, load.Config{Addr: th.addr, Request: req, Conns: o.openConns, Rate: rep.Offered,
		Warmup: o.warmup, Duration: o.duration, Timeout: o.timeout, OnRecord: m.begin, OnRecordEnd: m.end})
	if err = cutShort(ctx, err); err != nil {
		return nil, fmt.Errorf("tokenhub: %w", err)
	}
	rep.Open.Target = th.name
	rep.cost = m.cost(rep.Open.Requests)
	rep.Admitted = rep.Open.Throughput
	if rep.Open.Requests > 0 {
		rep.RefusedShare = float64(rep.Open.Refused) / float64(rep.Open.Requests)
	}
	fmt.Fprintf(logw, "tokenhub: %.1f req/s admitted of %.0f offered, limit %d/s; %d refused, %d errors\n",
		rep.Admitted, rep.Offered, limit, rep.Open.Refused, rep.Open.Errors)

	sample, sampleErr := sampleRefusal(th.addr, &req)
	rep.Sample = sample
	rep.Problems = rep.check(sampleErr)
	return rep, nil
}

// check returns what is wrong with the run: an admitted rate other than the
// limit, a refusal other than OpenAI's, any other error.
func (r *rateLimitReport) check(sampleErr error) []string {
	var p []string
	o := r.Open
	slack := float64(r.LimitRPS)*admittedTolerance + 1/r.Duration.Seconds()
	if d := r.Admitted - float64(r.LimitRPS); d > slack || -d > slack {
		p = append(p, fmt.Sprintf("admitted %.1f req/s, want %d±%.1f", r.Admitted, r.LimitRPS, slack))
	}
	if o.Errors > 0 {
		p = append(p, fmt.Sprintf("%d errors (%s): every answer must be a 200 or OpenAI's 429", o.Errors, errorKinds(o.ErrorsByKind)))
	}
	if !o.Valid() {
		p = append(p, fmt.Sprintf("%d requests late and %d unsent: the offered rate was not kept", o.Late, o.Unsent))
	}
	if sampleErr != nil {
		p = append(p, "the sample refusal: "+sampleErr.Error())
	}
	return p
}

// sampleRefusal sends req back to back until it is refused, the bucket
// being all but empty, and checks the 429 whole: the body must be exactly
// OpenAI's error object for requests per minute, the headers those the
// official SDKs read, with sane values.
func sampleRefusal(addr string, rq *load.Request) (refusalSample, error) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + rq.Path)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	for _, h := range rq.Headers {
		req.Header.Set(h.Name, h.Value)
	}
	req.SetBody(rq.Body)
	// The bucket refills while requests travel: one may be admitted.
	for range 100 {
		if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
			return refusalSample{}, err
		}
		if resp.StatusCode() != fasthttp.StatusOK {
			break
		}
	}
	s := refusalSample{Status: resp.StatusCode(), Body: string(resp.Body()), Headers: make(map[string]string)}
	for k, v := range resp.Header.All() {
		s.Headers[strings.ToLower(string(k))] = string(v)
	}
	return s, s.check()
}

// check is nil if s is OpenAI's 429 for requests per minute.
func (s *refusalSample) check() error {
	var errs []error
	if s.Status != fasthttp.StatusTooManyRequests {
		return fmt.Errorf("status %d, want 429: %s", s.Status, s.Body)
	}
	var body map[string]map[string]any
	dec := json.NewDecoder(strings.NewReader(s.Body))
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil || len(body) != 1 || body["error"] == nil {
		return fmt.Errorf("body %s: want {\"error\":{...}} alone", s.Body)
	}
	e := body["error"]
	msg, _ := e["message"].(string)
	param, hasParam := e["param"]
	if len(e) != 4 || msg == "" || e["type"] != "requests" || e["code"] != "rate_limit_exceeded" || !hasParam || param != nil {
		errs = append(errs, fmt.Errorf("body %s: want exactly message, type \"requests\", param null and code \"rate_limit_exceeded\"", s.Body))
	}
	if ct := s.Headers["content-type"]; !strings.HasPrefix(ct, "application/json") {
		errs = append(errs, fmt.Errorf("content-type %q, want application/json", ct))
	}
	positive := func(name string) {
		if n, err := strconv.ParseInt(s.Headers[name], 10, 64); err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("%s %q, want a whole number of at least 1", name, s.Headers[name]))
		}
	}
	positive("retry-after")
	positive("retry-after-ms")
	positive("x-ratelimit-limit-requests")
	if v := s.Headers["x-ratelimit-remaining-requests"]; v != "0" {
		errs = append(errs, fmt.Errorf("x-ratelimit-remaining-requests %q, want 0", v))
	}
	for _, h := range []string{"x-ratelimit-reset-requests", "x-request-id"} {
		if s.Headers[h] == "" {
			errs = append(errs, fmt.Errorf("no %s", h))
		}
	}
	return errors.Join(errs...)
}

func (r *rateLimitReport) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s: chat completions at %.0f req/s in an open loop, through a plan allowing %d a second (rpm %d, tpm %d, never the binding one); "+
		"%v after a %v warmup, the bucket emptied first; %d CPUs, loopback\n\n",
		r.Scenario, r.Offered, r.LimitRPS, r.RPM, r.TPM, r.Duration, r.Warmup, r.CPUs)
	o := r.Open
	b.WriteString("| offered | limit | admitted | refused | refused share | admitted p50 | admitted p99 | refusal p50 | refusal p99 | late | unsent | errors | CPU s/10k req | allocs/req |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var rl load.Latency
	if o.RefusedLatency != nil {
		rl = *o.RefusedLatency
	}
	fmt.Fprintf(&b, "| %.0f/s | %d/s | %.1f/s | %d | %.1f%% | %s | %s | %s | %s | %d | %d | %d | %s | %s |\n",
		r.Offered, r.LimitRPS, r.Admitted, o.Refused, 100*r.RefusedShare, ms(o.Latency.P50), ms(o.Latency.P99),
		ms(rl.P50), ms(rl.P99), o.Late, o.Unsent, o.Errors, cpuPer10k(r.CPUPer10k), allocs(r.AllocsPerRequest))
	fmt.Fprintf(&b, "\nEvery 429 was checked for OpenAI's body (type requests, code rate_limit_exceeded, param null) and the headers "+
		"retry-after, retry-after-ms, x-ratelimit-{limit,remaining,reset}-requests and x-request-id; one read whole afterwards: retry-after %s, retry-after-ms %s, x-ratelimit-reset-requests %s.\n",
		r.Sample.Headers["retry-after"], r.Sample.Headers["retry-after-ms"], r.Sample.Headers["x-ratelimit-reset-requests"])
	if d := r.Drain; d != nil {
		fmt.Fprintf(&b, "\nemptying the bucket: %d requests, %d admitted, %d refused, %.0f req/s\n", d.Requests, d.OK, d.Refused, float64(d.Requests)/d.Elapsed.Seconds())
	}
	if len(r.Problems) > 0 {
		b.WriteString("\nFAIL: " + strings.Join(r.Problems, "; ") + "\n")
	} else {
		b.WriteString("\npass: the admitted rate is the limit and every refusal is OpenAI's 429\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// verdict is an error naming what the run found wrong.
func (r *rateLimitReport) verdict() error {
	if len(r.Problems) == 0 {
		return nil
	}
	return fmt.Errorf("rate limit: %s", strings.Join(r.Problems, "; "))
}
