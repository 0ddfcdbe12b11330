package limits

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/tokenhub/tokenhub/internal/usd"
	bolt "go.etcd.io/bbolt"
)

func usage(key string, req, prompt, completion int64, spent usd.Pico, models map[string]Counts) *MonthUsage {
	u := &MonthUsage{KeyID: key, Month: 202611, Counts: Counts{Requests: req, PromptTokens: prompt, CompletionTokens: completion, Spent: spent}}
	for name, c := range models {
		if u.Models == nil {
			u.Models = map[string]*Counts{}
		}
		u.Models[name] = &c
	}
	return u
}

// TestBoltLedgerRecords: deltas add up across flushes, by model, whether
// the stored record is binary, the JSON of earlier versions, or has more
// models than the fast merge handles.
func TestBoltLedgerRecords(t *testing.T) {
	many := map[string]Counts{}
	for i := range 200 {
		many[fmt.Sprintf("m%03d", i)] = Counts{Requests: 1, PromptTokens: 2, CompletionTokens: 3, Spent: 4}
	}
	manyTwice := map[string]Counts{}
	for name := range many {
		manyTwice[name] = Counts{Requests: 2, PromptTokens: 4, CompletionTokens: 6, Spent: 8}
	}
	for _, tc := range []struct {
		name   string
		legacy *MonthUsage // stored as JSON first, when set
		deltas []*MonthUsage
		want   *MonthUsage
	}{
		{"one delta", nil,
			[]*MonthUsage{usage("k", 1, 10, 20, 30, map[string]Counts{"a": {1, 10, 0, 0, 20, 30}})},
			usage("k", 1, 10, 20, 30, map[string]Counts{"a": {1, 10, 0, 0, 20, 30}})},
		{"models old and new", nil,
			[]*MonthUsage{
				usage("k", 2, 10, 20, 30, map[string]Counts{"a": {1, 5, 0, 0, 10, 15}, "b": {1, 5, 0, 0, 10, 15}}),
				usage("k", 2, 1, 2, 3, map[string]Counts{"b": {1, 0, 0, 0, 1, 1}, "c": {1, 1, 0, 0, 1, 2}, "zero": {}}),
			},
			usage("k", 4, 11, 22, 33, map[string]Counts{"a": {1, 5, 0, 0, 10, 15}, "b": {2, 5, 0, 0, 11, 16}, "c": {1, 1, 0, 0, 1, 2}})},
		{"from a JSON record", usage("k", 5, 50, 60, 1<<40, map[string]Counts{"a": {5, 50, 0, 0, 60, 1 << 40}}),
			[]*MonthUsage{usage("k", 1, 1, 1, 1, map[string]Counts{"a": {1, 1, 0, 0, 1, 1}, "b": {0, 0, 0, 0, 0, 0}})},
			usage("k", 6, 51, 61, 1<<40+1, map[string]Counts{"a": {6, 51, 0, 0, 61, 1<<40 + 1}})},
		{"200 models", nil,
			[]*MonthUsage{usage("k", 200, 400, 600, 800, many), usage("k", 200, 400, 600, 800, many)},
			usage("k", 400, 800, 1200, 1600, manyTwice)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := OpenBoltLedger(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if u := tc.legacy; u != nil {
				rec := usageRecord{Counts: u.Counts, Spent: int64(u.Spent), Models: map[string]modelRecord{}}
				rec.Counts.Spent = 0
				for name, c := range u.Models {
					mc := *c
					mc.Spent = 0
					rec.Models[name] = modelRecord{Counts: mc, Spent: int64(c.Spent)}
				}
				v, _ := json.Marshal(rec)
				if err := l.db.Update(func(tx *bolt.Tx) error {
					return tx.Bucket(usageBucket).Put(ledgerKey(nil, u.KeyID, u.Month), v)
				}); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range tc.deltas {
				if err := l.Add(context.Background(), []*MonthUsage{d}); err != nil {
					t.Fatal(err)
				}
			}
			got, err := l.Load(context.Background(), "k", 202611)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// BenchmarkBoltLedgerAdd: a flush of 10,000 keys' usage, each key's record
// already stored, as under traffic spread over many keys.
func BenchmarkBoltLedgerAdd(b *testing.B) {
	l, err := OpenBoltLedger(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	batch := make([]*MonthUsage, 10_000)
	for i := range batch {
		batch[i] = usage(fmt.Sprintf("key_%024d", i), 1, 100, 16, 116_000_000, map[string]Counts{"gpt-4o-mini": {1, 100, 0, 0, 16, 116_000_000}})
	}
	if err := l.Add(context.Background(), batch); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := l.Add(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/record")
}
