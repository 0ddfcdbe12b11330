package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/packages/param"
	"github.com/valyala/fasthttp"

	"github.com/tokenhub/tokenhub/internal/mock"
)

func asAPIError(err error, target **openai.Error) bool { return errors.As(err, target) }

func TestChatCompletion(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 12})
	g := startGateway(t, yamlModels(up), "")
	k := g.newKey("all")
	ctx := context.Background()

	via := g.client(k.Key)
	got, err := via.Chat.Completions.New(ctx, chatParams("mock", "Tell me a story"))
	if err != nil {
		t.Fatal(err)
	}
	direct := openai.NewClient(optionBase(up), optionKey("x"))
	want, err := direct.Chat.Completions.New(ctx, chatParams("mock", "Tell me a story"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Choices[0].Message.Content != want.Choices[0].Message.Content || got.Choices[0].Message.Content == "" {
		t.Fatalf("content through tokenhub %q, direct %q", got.Choices[0].Message.Content, want.Choices[0].Message.Content)
	}
	if got.Usage.PromptTokens != want.Usage.PromptTokens || got.Usage.CompletionTokens != 12 || want.Usage.CompletionTokens != 12 {
		t.Fatalf("usage through tokenhub %+v, direct %+v", got.Usage, want.Usage)
	}
	if got.Model != "mock" {
		t.Fatalf("model %q, want mock", got.Model)
	}
}

func TestModelRenamedForUpstream(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, yamlModels(up), "")
	c := g.client(g.newKey("all").Key)
	got, err := c.Chat.Completions.New(context.Background(), chatParams("alias", "hi"))
	if err != nil {
		t.Fatal(err)
	}
	// The mock echoes the model it was asked for.
	if got.Model != "upstream-name" {
		t.Fatalf("upstream saw model %q, want upstream-name", got.Model)
	}
}

func TestChatStream(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 20, ChunkInterval: time.Millisecond})
	g := startGateway(t, yamlModels(up), "")
	c := g.client(g.newKey("all").Key)
	ctx := context.Background()

	accumulate := func(c *openai.Client) (string, int) {
		t.Helper()
		s := c.Chat.Completions.NewStreaming(ctx, chatParams("mock", "stream please"))
		var acc openai.ChatCompletionAccumulator
		events := 0
		for s.Next() {
			acc.AddChunk(s.Current())
			events++
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		return acc.Choices[0].Message.Content, events
	}
	gotText, gotEvents := accumulate(c)
	direct := openai.NewClient(optionBase(up), optionKey("x"))
	wantText, wantEvents := accumulate(&direct)
	if gotText != wantText || gotEvents != wantEvents || gotText == "" {
		t.Fatalf("through tokenhub %d events %q; direct %d events %q", gotEvents, gotText, wantEvents, wantText)
	}
}

// TestStreamBytesPassThrough proves the stream is relayed byte for byte and
// event by event: each event reaches the client before the upstream sends the next.
func TestStreamBytesPassThrough(t *testing.T) {
	events := []string{
		"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
		": a comment line\r\n\r\n",
		"event: custom\nid: 7\ndata: {\"x\":1}\ndata: {\"y\":2}\n\n",
		"data: [DONE]\n\n",
	}
	release := make(chan struct{})
	up := startUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for i, ev := range events {
				w.WriteString(ev)
				w.Flush()
				if i == 0 {
					<-release // hold the rest until the client has the first event
				}
			}
		})
	})
	g := startGateway(t, yamlModels(up), "")
	k := g.newKey("all")

	req, _ := http.NewRequest("POST", g.url+"/v1/chat/completions", strings.NewReader(`{"model":"mock","stream":true,"messages":[]}`))
	req.Header.Set("Authorization", "Bearer "+k.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	for h, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(h); got != want {
			t.Fatalf("header %s = %q, want %q", h, got, want)
		}
	}
	first := make([]byte, len(events[0]))
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("first event did not arrive on its own: %v", err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(first)+string(rest), strings.Join(events, ""); got != want {
		t.Fatalf("stream bytes differ:\n got %q\nwant %q", got, want)
	}
}

func TestStreamCutGetsErrorEvent(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 10, FailAfterChunks: 3})
	g := startGateway(t, yamlModels(up), "")
	c := g.client(g.newKey("all").Key)
	s := c.Chat.Completions.NewStreaming(context.Background(), chatParams("mock", "hi"))
	n := 0
	for s.Next() {
		n++
	}
	err := s.Err()
	if err == nil || !strings.Contains(err.Error(), "upstream") {
		t.Fatalf("after %d chunks got err %v, want the gateway's upstream error event", n, err)
	}
}

func TestCompletions(t *testing.T) {
	_, up := startMock(t, mock.Options{Chunks: 5})
	g := startGateway(t, yamlModels(up), "")
	c := g.client(g.newKey("all").Key)
	got, err := c.Completions.New(context.Background(), openai.CompletionNewParams{
		Model:  openai.CompletionNewParamsModel("mock"),
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: param.NewOpt("Say this is a test")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Object != "text_completion" || got.Choices[0].Text == "" || got.Usage.CompletionTokens != 5 {
		t.Fatalf("completion %+v", got)
	}
}

func TestEmbeddingsFloatAndBase64(t *testing.T) {
	_, up := startMock(t, mock.Options{EmbeddingDims: 64})
	g := startGateway(t, yamlModels(up), "")
	c := g.client(g.newKey("all").Key)
	ctx := context.Background()
	get := func(format openai.EmbeddingNewParamsEncodingFormat) []float64 {
		t.Helper()
		res, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model:          "mock",
			Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"one", "two"}},
			EncodingFormat: format,
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Data) != 2 || res.Usage.PromptTokens == 0 {
			t.Fatalf("embeddings %+v", res)
		}
		return res.Data[1].Embedding
	}
	f, b := get(openai.EmbeddingNewParamsEncodingFormatFloat), get(openai.EmbeddingNewParamsEncodingFormatBase64)
	if len(f) != 64 || len(b) != 64 {
		t.Fatalf("dims float %d base64 %d, want 64", len(f), len(b))
	}
	for i := range f {
		if float32(f[i]) != float32(b[i]) {
			t.Fatalf("value %d: float %v base64 %v", i, f[i], b[i])
		}
	}
}

func TestModelsListedByPlan(t *testing.T) {
	_, up := startMock(t, mock.Options{})
	g := startGateway(t, yamlModels(up), "")
	ctx := context.Background()
	list := func(plan string) []string {
		t.Helper()
		c := g.client(g.newKey(plan).Key)
		page, err := c.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range page.Data {
			if m.Object != "model" || m.OwnedBy != "up" || m.Created == 0 {
				t.Fatalf("model entry %+v", m)
			}
			ids = append(ids, m.ID)
		}
		return ids
	}
	if got := strings.Join(list("all"), ","); got != "alias,mock,other" {
		t.Fatalf("plan all lists %s", got)
	}
	if got := strings.Join(list("mockonly"), ","); got != "alias,mock" {
		t.Fatalf("plan mockonly lists %s", got)
	}
	c := g.client(g.newKey("mockonly").Key)
	if m, err := c.Models.Get(ctx, "mock"); err != nil || m.ID != "mock" {
		t.Fatalf("get mock: %v %+v", err, m)
	}
	_, err := c.Models.Get(ctx, "other")
	wantAPIError(t, err, 404, "invalid_request_error", "model_not_found")
}
