package index

import (
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/cairn-backup/cairn/crypto"
)

const (
	benchPacks        = 1000
	benchBlobsPerPack = 1000
)

// fillBenchPack fills p with pack number i of a deterministic synthetic
// repository: 1000 blobs of 4..28 KiB (database-dump sized chunks), so
// offsets stay below 32 MiB and every location fits the compact layout.
func fillBenchPack(p *PackEntry, i int) {
	rng := rand.New(rand.NewPCG(uint64(i), 0x1dea))
	p.ID = randID(rng)
	p.Type = DataBlob
	p.Blobs = p.Blobs[:0]
	var off uint32
	for j := 0; j < benchBlobsPerPack; j++ {
		l := 4<<10 + rng.Uint32N(24<<10)
		p.Blobs = append(p.Blobs, BlobEntry{ID: randID(rng), Offset: off, Length: l, RawLength: 2 * l})
		off += l
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkIndexMemory builds an index of 1,000,000 blobs in 1,000 packs and
// reports the heap it holds after Compact (target: at most 40 bytes a blob).
func BenchmarkIndexMemory(b *testing.B) {
	const n = benchPacks * benchBlobsPerPack
	var heapPerBlob, estPerBlob float64
	p := &PackEntry{Blobs: make([]BlobEntry, 0, benchBlobsPerPack)}
	for b.Loop() {
		b.StopTimer()
		before := heapAlloc()
		b.StartTimer()
		idx := New()
		for i := 0; i < benchPacks; i++ {
			fillBenchPack(p, i)
			idx.AddPack(*p)
		}
		idx.Compact()
		b.StopTimer()
		after := heapAlloc()
		if c := idx.Count(); c != n {
			b.Fatalf("index holds %d blobs, want %d", c, n)
		}
		heapPerBlob = float64(int64(after)-int64(before)) / n
		estPerBlob = float64(idx.MemoryBytes()) / n
		runtime.KeepAlive(idx)
		b.StartTimer()
	}
	b.ReportMetric(heapPerBlob, "heap-B/blob")
	b.ReportMetric(estPerBlob, "est-B/blob")
}

// BenchmarkLookup measures Lookup in a compacted index of 1,000,000 blobs,
// for blobs that are present and blobs that are not.
func BenchmarkLookup(b *testing.B) {
	idx := New()
	p := &PackEntry{}
	ids := make([]crypto.ID, 0, benchPacks*benchBlobsPerPack)
	for i := 0; i < benchPacks; i++ {
		fillBenchPack(p, i)
		idx.AddPack(*p)
		for _, e := range p.Blobs {
			ids = append(ids, e.ID)
		}
	}
	idx.Compact()
	rng := rand.New(rand.NewPCG(42, 42))
	b.Run("hit", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, ok := idx.Lookup(ids[i]); !ok {
				b.Fatal("blob not found")
			}
			i += 7919 // a prime: hop around the table
			if i >= len(ids) {
				i -= len(ids)
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		absent := make([]crypto.ID, 4096)
		for i := range absent {
			absent[i] = randID(rng)
		}
		i := 0
		for b.Loop() {
			if _, ok := idx.Lookup(absent[i&4095]); ok {
				b.Fatal("absent blob found")
			}
			i++
		}
	})
	b.Run("parallel-hit", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(len(ids))
			for pb.Next() {
				if _, ok := idx.Lookup(ids[i]); !ok {
					b.Fatal("blob not found")
				}
				i += 7919
				if i >= len(ids) {
					i -= len(ids)
				}
			}
		})
	})
}

// BenchmarkLoad builds an index of 50,000 blobs in 50 packs, as opening a
// repository of a 43,000-file tree does before anything else can start.
func BenchmarkLoad(b *testing.B) {
	packs := make([]PackEntry, 50)
	for i := range packs {
		fillBenchPack(&packs[i], i)
		packs[i].Blobs = packs[i].Blobs[:1000]
	}
	for b.Loop() {
		idx := New()
		for _, p := range packs {
			idx.AddPack(p)
		}
		idx.Compact()
	}
}
