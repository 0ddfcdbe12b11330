package mock

import (
	"strconv"
	"testing"

	"github.com/openai/openai-go/v3"
)

func TestEmbeddings(t *testing.T) {
	ts := start(t, Options{EmbeddingDims: 64})
	client := ts.client()
	embed := func(input openai.EmbeddingNewParamsInputUnion, dims int64, format openai.EmbeddingNewParamsEncodingFormat) *openai.CreateEmbeddingResponse {
		t.Helper()
		p := openai.EmbeddingNewParams{Model: "text-embedding-test", Input: input, EncodingFormat: format}
		if dims > 0 {
			p.Dimensions = openai.Int(dims)
		}
		got, err := client.Embeddings.New(testContext(t), p)
		if err != nil {
			t.Fatalf("embeddings: %v", err)
		}
		if got.Object != "list" || got.Model != "text-embedding-test" {
			t.Fatalf("head: %s", got.RawJSON())
		}
		return got
	}
	f := func(name string, input openai.EmbeddingNewParamsInputUnion, dims int64, wantCount, wantDims int, wantTokens int64) {
		t.Helper()
		floats := embed(input, dims, openai.EmbeddingNewParamsEncodingFormatFloat)
		b64 := embed(input, dims, openai.EmbeddingNewParamsEncodingFormatBase64)
		if len(floats.Data) != wantCount || len(b64.Data) != wantCount {
			t.Fatalf("%s: %d and %d embeddings, want %d", name, len(floats.Data), len(b64.Data), wantCount)
		}
		if floats.Usage.PromptTokens != wantTokens || floats.Usage.TotalTokens != wantTokens {
			t.Fatalf("%s: usage %s, want %d tokens", name, floats.Usage.RawJSON(), wantTokens)
		}
		for i := range floats.Data {
			fv, bv := floats.Data[i].Embedding, b64.Data[i].Embedding
			if floats.Data[i].Index != int64(i) || len(fv) != wantDims || len(bv) != wantDims {
				t.Fatalf("%s: embedding %d: index %d, %d floats, %d from base64, want %d", name, i,
					floats.Data[i].Index, len(fv), len(bv), wantDims)
			}
			norm := 0.0
			for j := range fv {
				// The text is the float32 written in decimal; both must be the same float32.
				if float32(fv[j]) != float32(bv[j]) {
					t.Fatalf("%s: embedding %d[%d]: float %v, base64 %v", name, i, j, fv[j], bv[j])
				}
				norm += fv[j] * fv[j]
			}
			if wantDims >= 64 && (norm < 0.5 || norm > 1.5) {
				t.Fatalf("%s: embedding %d: squared norm %v, want about 1", name, i, norm)
			}
		}
	}
	f("string", openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hello world")}, 0, 1, 64, 3)
	f("dimensions", openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hello")}, 3, 1, 3, 2)
	f("strings", openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "bb", "ccccc"}}, 0, 3, 64, 4)
	f("tokens", openai.EmbeddingNewParamsInputUnion{OfArrayOfTokens: []int64{1, 2, 3}}, 0, 1, 64, 3)
	f("token arrays", openai.EmbeddingNewParamsInputUnion{OfArrayOfTokenArrays: [][]int64{{1}, {2, 3}}}, 0, 2, 64, 3)

	// Deterministic: the same input always gets the same vector, another input another one.
	a := embed(openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"same", "same", "other"}}, 0, "")
	if !equal(a.Data[0].Embedding, a.Data[1].Embedding) || equal(a.Data[0].Embedding, a.Data[2].Embedding) {
		t.Fatal("equal inputs must get equal vectors and different ones different vectors")
	}
	b := embed(openai.EmbeddingNewParamsInputUnion{OfString: openai.String("same")}, 0, "")
	if !equal(a.Data[0].Embedding, b.Data[0].Embedding) {
		t.Fatal("the same input must get the same vector across requests")
	}
}

func TestEmbeddingsDefaultDims(t *testing.T) {
	ts := start(t, Options{})
	client := ts.client()
	got, err := client.Embeddings.New(testContext(t), openai.EmbeddingNewParams{
		Model: "m", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got.Data[0].Embedding); n != DefaultEmbeddingDims {
		t.Fatalf("%d dimensions, want %d", n, DefaultEmbeddingDims)
	}
}

func TestAppendMillionths(t *testing.T) {
	f := func(m int64, want string) {
		t.Helper()
		got := string(appendMillionths(nil, m))
		if got != want {
			t.Fatalf("appendMillionths(%d) = %q, want %q", m, got, want)
		}
		if back, err := strconv.ParseFloat(got, 32); err != nil || float32(back) != float32(m)/1e6 {
			t.Fatalf("%q reads back as %v (%v), want the float32 %v", got, back, err, float32(m)/1e6)
		}
	}
	f(0, "0.000000")
	f(1, "0.000001")
	f(-44194, "-0.044194")
	f(1732051, "1.732051")
	f(-1000000, "-1.000000")
}

func equal(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
