package main

import (
	"context"
	"fmt"
	"io"

	"github.com/tokenhub/tokenhub/bench/load"
	"github.com/tokenhub/tokenhub/internal/mock"
)

// claudeScenario measures chat completions to a model on an anthropic
// upstream: tokenhub translates each into a Messages request to the mock's
// /v1/messages and the answer back. The direct row is the same chat request
// to the mock's OpenAI API, the baseline of a gateway that translates
// nothing; nginx cannot translate, so it is not measured.
const claudeScenario = "claude-chat"

// claudeRouteModel is the route's upstream model: one the mock's Messages
// API serves.
const claudeRouteModel = "claude-sonnet-4-6"

func claudeChat(ctx context.Context, o *options, logw io.Writer) (*report, error) {
	if err := o.checkThroughput(); err != nil {
		return nil, err
	}
	sc, err := load.NewScenario("chat", benchModel, o.maxTokens)
	if err != nil {
		return nil, err
	}
	tokenhubBin, err := needTokenhub(o, claudeScenario)
	if err != nil {
		return nil, err
	}
	st, err := startStack(ctx, logw, stackSpec{tokenhubBin: tokenhubBin, anthropic: true,
		gw: gateway{plan: benchPlan(o.limits)}, mock: mock.Options{Latency: o.mockLatency}})
	if err != nil {
		return nil, err
	}
	defer st.close()
	what := fmt.Sprintf("buffered chat completions of %d words, which tokenhub translates for an anthropic upstream "+
		"(the mock's Messages API, API version 2023-06-01) and back; direct is the same chat request to the mock's OpenAI API", o.maxTokens)
	if o.mockLatency > 0 {
		what += fmt.Sprintf(", the mock answering after %v", o.mockLatency)
	}
	sc.Request.Headers = append(sc.Request.Headers, load.Header{Name: "Authorization", Value: "Bearer " + st.key()})
	rep, err := runThroughput(ctx, o, logw, claudeScenario, what, sc.Request, st.targets)
	if err != nil {
		return nil, err
	}
	rep.IdleRSS = st.idleRSS
	rep.Notes = append(rep.Notes, "compare tokenhub's CPU s/10k req and allocs/req with the chat scenario's: the difference is the translation's cost")
	return rep, nil
}
