package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// corpus returns the cached corpus directory name under the cache, and
// generates it first if it is missing (into name.partial, renamed when
// complete, so an interrupted generation is never mistaken for a corpus).
func (b *bench) corpus(name string, gen func(dir string) error) (string, error) {
	dir := filepath.Join(b.o.cache, name)
	if _, err := os.Stat(filepath.Join(dir, "complete")); err == nil {
		b.logf("   corpus %s (cached)", dir)
		return dir, nil
	}
	tmp := dir + ".partial"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	b.logf("   generating corpus %s", dir)
	t0 := time.Now()
	if err := gen(tmp); err != nil {
		return "", fmt.Errorf("generate %s: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "complete"), []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	b.logf("   corpus generated in %s", time.Since(t0).Round(time.Second))
	return dir, nil
}

func writeJSONFile(path string, v any) error {
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(js, '\n'), 0o644)
}

func readJSONFile(path string, v any) error {
	js, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(js, v)
}

var words = []string{
	"the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
	"user", "session", "token", "request", "response", "error", "warning", "info", "debug", "flow", "stage",
	"policy", "binding", "provider", "application", "outpost", "tenant", "brand", "group", "member", "event",
	"login", "logout", "password", "authorize", "consent", "redirect", "callback", "header", "cookie", "cache",
	"database", "connection", "timeout", "retry", "backup", "restore", "snapshot", "index", "pack", "blob",
	"server", "client", "worker", "queue", "task", "scheduled", "completed", "failed", "started", "pending",
	"configuration", "value", "default", "enabled", "disabled", "true", "false", "null", "none", "unknown",
	"https://auth.example.com/application/o/authorize/", "/api/v3/core/users/", "Mozilla/5.0", "X11; Linux x86_64",
	"{", "}", "[", "]", ":", ",", "\"id\"", "\"name\"", "\"email\"", "\"created\"", "\"attributes\"",
}

// textBytes returns n bytes of log- or document-like text: words, numbers,
// timestamps and hex identifiers (compresses about 3-4:1 with zstd).
func textBytes(rng *rand.Rand, n int) []byte {
	out := make([]byte, 0, n+64)
	col := 0
	for len(out) < n {
		switch rng.IntN(12) {
		case 0:
			out = strconv.AppendInt(out, rng.Int64N(1_000_000), 10)
		case 1:
			out = time.Unix(1_760_000_000+rng.Int64N(30_000_000), 0).UTC().AppendFormat(out, time.RFC3339)
		case 2:
			out = fmt.Appendf(out, "%016x", rng.Uint64())
		default:
			out = append(out, words[rng.IntN(len(words))]...)
		}
		col++
		if col >= 8+rng.IntN(10) {
			out = append(out, '\n')
			col = 0
		} else {
			out = append(out, ' ')
		}
	}
	return out[:n]
}

// randomBytes returns n incompressible bytes.
func randomBytes(c *rand.ChaCha8, n int) []byte {
	b := make([]byte, n)
	_, _ = c.Read(b)
	return b
}

// logUniform returns an integer in [lo, hi] with a log-uniform distribution
// (as many files of 100-1000 bytes as of 1000-10000).
func logUniform(rng *rand.Rand, lo, hi int) int {
	l, h := math.Log(float64(lo)), math.Log(float64(hi))
	return int(math.Exp(l + rng.Float64()*(h-l)))
}

func newRand(seed uint64) (*rand.Rand, *rand.ChaCha8) {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	key[31] = 0xcb
	return rand.New(rand.NewPCG(seed, 0x63616972)), rand.NewChaCha8(key)
}
