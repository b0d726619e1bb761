// Package crypto holds cairn's cryptographic primitives: object IDs, the
// repository master key and its sub-keys, AEAD sealing of every stored object,
// and password-protected key files.
package crypto

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
	lblake3 "lukechampine.com/blake3"
)

// IDSize is the length of every ID in bytes.
const IDSize = 32

// ID names a blob (keyed BLAKE3 of its plaintext) or a storage object
// (plain BLAKE3 of its stored bytes).
type ID [IDSize]byte

// String returns the lowercase hex form of the ID.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first eight hex digits, for display.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// Compare orders IDs as their hex strings would be, without making them.
func (id ID) Compare(o ID) int { return bytes.Compare(id[:], o[:]) }

// IsNull reports whether the ID is all zero (unset).
func (id ID) IsNull() bool { return id == ID{} }

// ParseID parses a 64-digit hex ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("invalid ID %q: want %d hex digits", s, 2*IDSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("invalid ID %q: %w", s, err)
	}
	return id, nil
}

// MarshalText encodes the ID as hex (used in JSON).
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText decodes a hex ID.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// largeInput is the size from which BLAKE3 is computed with
// lukechampine.com/blake3, whose AVX-512 code hashes 16 chunks at once:
// on the reference machine 3.2 GB/s against 2.6 at 512 KiB and 4.6 against
// 2.6 at 4 MiB, but slower below 512 KiB, where zeebo/blake3 stays. Both
// compute the same function (TestBLAKE3Implementations).
const largeInput = 512 << 10

// Hash returns the plain BLAKE3-256 hash of data: the storage name of an object.
func Hash(data []byte) ID {
	if len(data) >= largeInput {
		return ID(lblake3.Sum256(data))
	}
	return ID(blake3.Sum256(data))
}

// Hasher computes Hash of a stream: write the bytes, then call Sum.
type Hasher struct{ h *blake3.Hasher }

// NewHasher returns a Hasher for Hash.
func NewHasher() *Hasher { return &Hasher{blake3.New()} }

// Write adds p to the hashed stream; it never fails.
func (h *Hasher) Write(p []byte) (int, error) { return h.h.Write(p) }

// Sum returns the hash of everything written.
func (h *Hasher) Sum() ID {
	var id ID
	h.h.Sum(id[:0])
	return id
}

// MasterKeySize is the size of the random master secret.
const MasterKeySize = 32

// Overhead is the number of bytes Seal adds: a 24-byte nonce and a 16-byte tag.
const Overhead = chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead

// ErrUnauthenticated is returned when a sealed object fails authentication:
// wrong key, or the bytes were modified.
var ErrUnauthenticated = errors.New("ciphertext verification failed")

// Key is a repository's master key with the sub-keys derived from it.
// It is safe for concurrent use.
type Key struct {
	master [MasterKeySize]byte
	aead   cipher.AEAD
	idKey  [32]byte
	// idHashers holds keyed hashers to reset and reuse: setting one up
	// costs about as much as hashing a small blob. largeIDHashers are
	// those for blobs of largeInput and more.
	idHashers, largeIDHashers sync.Pool
}

// NewRandomKey creates a fresh master key from crypto/rand.
func NewRandomKey() (*Key, error) {
	var m [MasterKeySize]byte
	if _, err := io.ReadFull(rand.Reader, m[:]); err != nil {
		return nil, fmt.Errorf("read random master key: %w", err)
	}
	return KeyFromMaster(m)
}

// KeyFromMaster derives the encryption and ID sub-keys from a master secret
// with HKDF-SHA256 (info strings "cairn v1 encryption" and "cairn v1 blob id").
func KeyFromMaster(m [MasterKeySize]byte) (*Key, error) {
	k := &Key{master: m}
	var encKey [chacha20poly1305.KeySize]byte
	if _, err := io.ReadFull(hkdf.New(sha256.New, m[:], nil, []byte("cairn v1 encryption")), encKey[:]); err != nil {
		return nil, fmt.Errorf("derive encryption key: %w", err)
	}
	if _, err := io.ReadFull(hkdf.New(sha256.New, m[:], nil, []byte("cairn v1 blob id")), k.idKey[:]); err != nil {
		return nil, fmt.Errorf("derive id key: %w", err)
	}
	aead, err := chacha20poly1305.NewX(encKey[:])
	if err != nil {
		return nil, fmt.Errorf("init aead: %w", err)
	}
	k.aead = aead
	return k, nil
}

// Master returns the master secret (for sealing it into a key file).
func (k *Key) Master() [MasterKeySize]byte { return k.master }

// IDKey returns the key of the keyed hash that names blobs.
func (k *Key) IDKey() [32]byte { return k.idKey }

// WithIDKey returns the key with another blob-ID key and the same master
// and encryption keys: a repository made from another (init --from-repo)
// names blobs as that one does while encrypting with keys of its own.
func (k *Key) WithIDKey(id [32]byte) *Key {
	return &Key{master: k.master, aead: k.aead, idKey: id}
}

// BlobID returns the keyed BLAKE3-256 hash of plaintext, the ID of a blob.
func (k *Key) BlobID(plaintext []byte) ID {
	large := len(plaintext) >= largeInput
	pool := &k.idHashers
	if large {
		pool = &k.largeIDHashers
	}
	h, ok := pool.Get().(hash.Hash)
	switch {
	case ok:
		h.Reset()
	case large:
		h = lblake3.New(IDSize, k.idKey[:])
	default:
		h, _ = blake3.NewKeyed(k.idKey[:]) // never fails for a 32-byte key
	}
	_, _ = h.Write(plaintext)
	var id ID
	h.Sum(id[:0])
	pool.Put(h)
	return id
}

// Seal appends nonce || ciphertext || tag of plaintext to dst.
func (k *Key) Seal(dst, plaintext []byte) []byte {
	return seal(k.aead, dst, plaintext, nil)
}

// SealFor is Seal with ad (associated data) authenticated too: the object
// then opens only with OpenFor and the same ad, so one sealed for one
// purpose cannot pass for another.
func (k *Key) SealFor(dst, plaintext, ad []byte) []byte {
	return seal(k.aead, dst, plaintext, ad)
}

// OpenFor opens an object sealed with SealFor and the same ad.
func (k *Key) OpenFor(dst, sealed, ad []byte) ([]byte, error) {
	return open(k.aead, dst, sealed, ad)
}

// NonceSize is the length of the nonce that starts every sealed object.
const NonceSize = chacha20poly1305.NonceSizeX

// OpenInPlace is Open with the plaintext written over the ciphertext: it
// returns a slice of sealed, which it modifies (also when it fails).
func (k *Key) OpenInPlace(sealed []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return k.Open(nil, sealed)
	}
	return k.Open(sealed[NonceSize:NonceSize], sealed)
}

// Open authenticates and decrypts sealed (nonce || ciphertext || tag),
// appending the plaintext to dst.
func (k *Key) Open(dst, sealed []byte) ([]byte, error) {
	return open(k.aead, dst, sealed, nil)
}

func seal(aead cipher.AEAD, dst, plaintext, ad []byte) []byte {
	n := len(dst)
	need := n + Overhead + len(plaintext)
	if cap(dst) < need {
		nd := make([]byte, n, need)
		copy(nd, dst)
		dst = nd
	}
	dst = dst[:n+chacha20poly1305.NonceSizeX]
	nonce := dst[n:]
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		// crypto/rand never fails on supported platforms; a failure here
		// means the system is unusable and sealing must not proceed.
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return aead.Seal(dst, nonce, plaintext, ad)
}

func open(aead cipher.AEAD, dst, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("sealed object of %d bytes is shorter than %d: %w", len(sealed), Overhead, ErrUnauthenticated)
	}
	nonce := sealed[:chacha20poly1305.NonceSizeX]
	out, err := aead.Open(dst, nonce, sealed[chacha20poly1305.NonceSizeX:], ad)
	if err != nil {
		return nil, ErrUnauthenticated
	}
	return out, nil
}
