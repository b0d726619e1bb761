package repo

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/cairn-backup/cairn/index"
)

// sqlLike returns n bytes of text resembling a plain pg_dump: COPY rows with
// varying numbers, timestamps and words.
func sqlLike(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 99))
	words := []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "authentik", "default", "user", "group", "session", "token", "flow", "stage"}
	b := make([]byte, 0, n+256)
	for len(b) < n {
		b = fmt.Appendf(b, "INSERT INTO public.events (id, created, user_id, action, context) VALUES (%d, '2025-%02d-%02d %02d:%02d:%02d.%06d+00', %d, '%s_%s', '{\"ip\": \"10.%d.%d.%d\", \"n\": %d}');\n",
			rng.IntN(1e9), 1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1e6),
			rng.IntN(1e5), words[rng.IntN(len(words))], words[rng.IntN(len(words))], rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.Uint32())
	}
	return b[:n]
}

func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b
}

// BenchmarkSaveBlob saves new blobs from GOMAXPROCS goroutines into a local
// repository and flushes at the end: compression, encryption, hashing,
// verification before upload, and pack writes with fsync.
func BenchmarkSaveBlob(b *testing.B) {
	for _, kind := range []struct {
		name string
		gen  func(n int, seed uint64) []byte
	}{{"compressible", sqlLike}, {"incompressible", randomBytes}} {
		for _, size := range []int{1 << 20, 64 << 10} {
			b.Run(fmt.Sprintf("%s/%dKiB", kind.name, size>>10), func(b *testing.B) {
				benchSaveBlob(b, kind.gen(size, 1))
			})
		}
	}
}

func benchSaveBlob(b *testing.B, template []byte) {
	ctx := context.Background()
	r, _ := newTestRepo(b, Options{})
	var counter atomic.Uint64
	var stored atomic.Int64
	b.SetBytes(int64(len(template)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		data := append([]byte(nil), template...)
		for pb.Next() {
			// New content every time, so deduplication never short-circuits.
			n := counter.Add(1)
			binary.LittleEndian.PutUint64(data, n)
			binary.LittleEndian.PutUint64(data[len(data)/2:], n)
			res, err := r.SaveBlob(ctx, index.DataBlob, data)
			if err != nil {
				b.Error(err)
				return
			}
			if res.Known {
				b.Error("new content reported as known")
				return
			}
			stored.Add(int64(res.Stored))
		}
	})
	if err := r.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if got := r.Index().Count(); got != int(counter.Load()) {
		b.Fatalf("index holds %d blobs after saving %d", got, counter.Load())
	}
	b.ReportMetric(float64(stored.Load())/float64(int64(len(template))*int64(b.N)), "stored/raw")
}
