package affinity

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/internal/valkeytest"
)

// BenchmarkRemember is the store write a stored response costs the gateway
// on its create (not on chat's path): one fsynced bbolt transaction, or one
// Valkey script call.
func BenchmarkRemember(b *testing.B) {
	r := Record{Upstream: "openai", Model: "gpt-4o-mini", RouteModel: "gpt-4o-mini", KeyID: "key_0123456789abcdef"}
	run := func(b *testing.B, s Store) {
		ctx := context.Background()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := s.Remember(ctx, fmt.Sprintf("resp_%048d", i), r); err != nil {
				b.Fatal(err)
			}
		}
	}
	parallel := func(b *testing.B, s Store) {
		ctx := context.Background()
		b.ReportAllocs()
		var n atomic.Int64
		b.SetParallelism(16) // concurrent creates, as under load
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := s.Remember(ctx, fmt.Sprintf("resp_%048d", n.Add(1)), r); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("bolt/parallel", func(b *testing.B) {
		s, err := OpenBolt(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		parallel(b, s)
	})
	b.Run("valkey/parallel", func(b *testing.B) {
		v := valkeytest.Start(b)
		parallel(b, NewValkey(v.Client(b), "bench", time.Second, Options{}))
	})
	b.Run("bolt", func(b *testing.B) {
		s, err := OpenBolt(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, s)
	})
	b.Run("valkey", func(b *testing.B) {
		v := valkeytest.Start(b)
		run(b, NewValkey(v.Client(b), "bench", time.Second, Options{}))
	})
}
