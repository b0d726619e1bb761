package crypto

import (
	mrand "math/rand/v2"

	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	zeebo "github.com/zeebo/blake3"
	lblake3 "lukechampine.com/blake3"
)

// testKDF keeps argon2id cheap in tests.
var testKDF = KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func fixedKey(t testing.TB, seed byte) *Key {
	t.Helper()
	var m [MasterKeySize]byte
	for i := range m {
		m[i] = seed + byte(i)
	}
	k, err := KeyFromMaster(m)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenRoundTrip(t *testing.T) {
	k, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 15, 16, 17, 1000, 64 << 10} {
		plain := make([]byte, n)
		for i := range plain {
			plain[i] = byte(i * 7)
		}
		sealed := k.Seal(nil, plain)
		if len(sealed) != n+Overhead {
			t.Fatalf("sealed %d bytes into %d, want %d", n, len(sealed), n+Overhead)
		}
		got, err := k.Open(nil, sealed)
		if err != nil {
			t.Fatalf("open %d bytes: %v", n, err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("round trip of %d bytes differs", n)
		}
		// Sealing twice gives different ciphertexts (random nonces).
		if n > 0 && bytes.Equal(k.Seal(nil, plain), sealed) {
			t.Fatalf("two seals of the same plaintext are identical")
		}
	}
}

func TestSealOpenAppend(t *testing.T) {
	k := fixedKey(t, 1)
	prefix := []byte("HDR:")
	// dst with spare capacity and without.
	for _, dst := range [][]byte{append([]byte(nil), prefix...), append(make([]byte, 0, 1024), prefix...)} {
		sealed := k.Seal(dst, []byte("hello"))
		if !bytes.HasPrefix(sealed, prefix) {
			t.Fatalf("Seal did not keep dst prefix: %q", sealed[:4])
		}
		out, err := k.Open([]byte("pre-"), sealed[len(prefix):])
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != "pre-hello" {
			t.Fatalf("Open appended wrongly: %q", out)
		}
	}
}

func TestTamperDetection(t *testing.T) {
	k := fixedKey(t, 1)
	plain := []byte("a small secret message")
	sealed := k.Seal(nil, plain)
	for i := range sealed {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			c := bytes.Clone(sealed)
			c[i] ^= mask
			if out, err := k.Open(nil, c); !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("flipping byte %d with %#x: got %q, %v; want ErrUnauthenticated", i, mask, out, err)
			}
		}
	}
	// Truncation at every length and appended bytes are rejected.
	for n := 0; n < len(sealed); n++ {
		if _, err := k.Open(nil, sealed[:n]); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("truncated to %d bytes: got %v", n, err)
		}
	}
	if _, err := k.Open(nil, append(bytes.Clone(sealed), 0)); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("extended: got %v", err)
	}
	// Another key cannot open it.
	if _, err := fixedKey(t, 2).Open(nil, sealed); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("wrong key: got %v", err)
	}
	if _, err := k.Open(nil, sealed); err != nil {
		t.Fatalf("original no longer opens: %v", err)
	}
}

func TestBlobID(t *testing.T) {
	k1, k1b, k2 := fixedKey(t, 1), fixedKey(t, 1), fixedKey(t, 2)
	data := []byte("some blob content")
	id1 := k1.BlobID(data)
	if id1 != k1b.BlobID(data) {
		t.Fatal("same master key gives different blob IDs")
	}
	if id1 != k1.BlobID(bytes.Clone(data)) {
		t.Fatal("blob ID is not deterministic")
	}
	if id1 == k2.BlobID(data) {
		t.Fatal("different keys give the same blob ID")
	}
	if id1 == k1.BlobID([]byte("some blob contenT")) {
		t.Fatal("different content gives the same blob ID")
	}
	// Keyed IDs are not the plain storage hash.
	if id1 == Hash(data) {
		t.Fatal("blob ID equals the unkeyed hash")
	}
	if Hash(data) != Hash(bytes.Clone(data)) || Hash(data) == Hash(nil) {
		t.Fatal("Hash is not a deterministic function of content")
	}
	if id1.IsNull() || !(ID{}).IsNull() {
		t.Fatal("IsNull is wrong")
	}
}

func TestKeyFile(t *testing.T) {
	k := fixedKey(t, 7)
	kf, err := NewKeyFile(k, "correct horse", testKDF, "host", "user")
	if err != nil {
		t.Fatal(err)
	}
	data, err := kf.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseKeyFile(data)
	if err != nil {
		t.Fatalf("parse own key file: %v", err)
	}
	if parsed.Hostname != "host" || parsed.Username != "user" || parsed.Params != testKDF || !parsed.Created.Equal(kf.Created) {
		t.Fatalf("parsed key file differs: %+v", parsed)
	}
	got, err := parsed.Open("correct horse")
	if err != nil {
		t.Fatalf("open with the right password: %v", err)
	}
	if got.Master() != k.Master() {
		t.Fatal("opened key has a different master secret")
	}
	if got.BlobID([]byte("x")) != k.BlobID([]byte("x")) {
		t.Fatal("opened key derives different sub-keys")
	}
	for _, pw := range []string{"", "correct horsE", "correct horse "} {
		if _, err := parsed.Open(pw); !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("password %q: got %v, want ErrWrongPassword", pw, err)
		}
	}
	// Two key files of the same key use different salts.
	kf2, err := NewKeyFile(k, "correct horse", testKDF, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(kf.Salt, kf2.Salt) || bytes.Equal(kf.MasterKey, kf2.MasterKey) {
		t.Fatal("key files share salt or sealed key")
	}
	// A tampered sealed master key does not open.
	parsed.MasterKey[len(parsed.MasterKey)-1] ^= 1
	if _, err := parsed.Open("correct horse"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("tampered key file: got %v", err)
	}
}

func TestParseKeyFileErrors(t *testing.T) {
	kf, err := NewKeyFile(fixedKey(t, 3), "pw", testKDF, "", "")
	if err != nil {
		t.Fatal(err)
	}
	valid, err := kf.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(valid, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := map[string][]byte{
		"not json":       []byte("{"),
		"empty":          nil,
		"version":        mutate(func(m map[string]any) { m["version"] = 2 }),
		"kdf":            mutate(func(m map[string]any) { m["kdf"] = "scrypt" }),
		"time 0":         mutate(func(m map[string]any) { m["kdf_params"].(map[string]any)["time"] = 0 }),
		"threads 0":      mutate(func(m map[string]any) { m["kdf_params"].(map[string]any)["threads"] = 0 }),
		"memory small":   mutate(func(m map[string]any) { m["kdf_params"].(map[string]any)["memory_kib"] = 7 }),
		"memory huge":    mutate(func(m map[string]any) { m["kdf_params"].(map[string]any)["memory_kib"] = 1 << 30 }),
		"short salt":     mutate(func(m map[string]any) { m["salt"] = "AAAA" }),
		"short key":      mutate(func(m map[string]any) { m["master_key"] = "AAAA" }),
		"no master key":  mutate(func(m map[string]any) { delete(m, "master_key") }),
		"salt not bytes": mutate(func(m map[string]any) { m["salt"] = 5 }),
	}
	for name, data := range cases {
		if _, err := ParseKeyFile(data); err == nil {
			t.Errorf("%s: ParseKeyFile accepted %s", name, data)
		}
	}
}

func TestParseID(t *testing.T) {
	id := fixedKey(t, 1).BlobID([]byte("x"))
	s := id.String()
	if len(s) != 64 || s != strings.ToLower(s) {
		t.Fatalf("String() = %q", s)
	}
	got, err := ParseID(s)
	if err != nil || got != id {
		t.Fatalf("ParseID(String()) = %v, %v", got, err)
	}
	if got, err := ParseID(strings.ToUpper(s)); err != nil || got != id {
		t.Fatalf("ParseID(upper) = %v, %v", got, err)
	}
	if id.Short() != s[:8] {
		t.Fatalf("Short() = %q", id.Short())
	}
	for _, bad := range []string{"", "00", s[:63], s + "0", s[:62] + "zz", s[:63] + "g", " " + s[1:], strings.Repeat("é", 32)} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
	// Text marshaling (JSON) round trip.
	b, err := json.Marshal(struct{ ID ID }{id})
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ ID ID }
	if err := json.Unmarshal(b, &v); err != nil || v.ID != id {
		t.Fatalf("JSON round trip: %s -> %v, %v", b, v.ID, err)
	}
	if err := json.Unmarshal([]byte(`{"ID":"abc"}`), &v); err == nil {
		t.Fatal("JSON accepted a short ID")
	}
}

// TestKeyFileParamBounds: parameters that would make one try of a planted
// key file cost minutes or gigabytes are refused before deriving.
func TestKeyFileParamBounds(t *testing.T) {
	k, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p  KDFParams
		ok bool
	}{
		{DefaultKDFParams(), true},
		{KDFParams{Time: 10, MemoryKiB: 1 << 20, Threads: 16}, true},
		{KDFParams{Time: 11, MemoryKiB: 64 << 10, Threads: 4}, false},
		{KDFParams{Time: 3, MemoryKiB: 1<<20 + 1, Threads: 4}, false},
		{KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 17}, false},
	} {
		kf, err := NewKeyFile(k, "pw", testKDF, "h", "u")
		if err != nil {
			t.Fatal(err)
		}
		kf.Params = c.p
		data, _ := json.Marshal(kf)
		if _, err := ParseKeyFile(data); (err == nil) != c.ok {
			t.Errorf("%+v: err %v, want ok=%v", c.p, err, c.ok)
		}
	}
}

// TestBLAKE3Implementations: the two BLAKE3 implementations (zeebo below
// largeInput, lukechampine from it on) compute the same plain and keyed
// hashes, at every size around the switch and the chunk boundaries.
func TestBLAKE3Implementations(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(7, 7))
	data := make([]byte, 4<<20+3)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var key [32]byte
	for i := range key {
		key[i] = byte(rng.Uint32())
	}
	for _, n := range []int{0, 1, 63, 64, 1023, 1024, 1025, 2048, 16<<10 + 1, 64 << 10, largeInput - 1, largeInput, largeInput + 1, 1<<20 + 17, 4<<20 + 3} {
		b := data[:n]
		if zeebo.Sum256(b) != lblake3.Sum256(b) {
			t.Errorf("plain hash of %d bytes differs", n)
		}
		zh, err := zeebo.NewKeyed(key[:])
		if err != nil {
			t.Fatal(err)
		}
		zh.Write(b)
		lh := lblake3.New(32, key[:])
		lh.Write(b)
		if !bytes.Equal(zh.Sum(nil), lh.Sum(nil)) {
			t.Errorf("keyed hash of %d bytes differs", n)
		}
	}
	// BlobID and Hash agree with zeebo's at and above the switch, and a
	// reused hasher gives the same ID again.
	k := fixedKey(t, 3)
	idKey := k.IDKey()
	for _, n := range []int{largeInput - 1, largeInput, 3<<20 + 5} {
		b := data[:n]
		zh, _ := zeebo.NewKeyed(idKey[:])
		zh.Write(b)
		var want ID
		zh.Sum(want[:0])
		for range 2 {
			if got := k.BlobID(b); got != want {
				t.Errorf("BlobID of %d bytes: %s, want %s", n, got, want)
			}
		}
		if Hash(b) != ID(zeebo.Sum256(b)) {
			t.Errorf("Hash of %d bytes differs from zeebo's", n)
		}
	}
}
