package crypto

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// KDFParams are the argon2id parameters of a key file.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// DefaultKDFParams returns the parameters used by init and key add: 64 MiB of
// memory, 3 passes, 4 lanes. On the reference 2-core machine one derivation
// takes about 0.2 s.
func DefaultKDFParams() KDFParams { return KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 4} }

// MinKDFMemoryKiB is the smallest argon2id memory cairn writes into key
// files outside of tests.
const MinKDFMemoryKiB = 64 * 1024

// ErrWrongPassword is returned when a key file cannot be opened with the given password.
var ErrWrongPassword = errors.New("wrong password or no key found")

// KeyFile is the JSON document stored under keys/. Only MasterKey is secret,
// and it is sealed with a key derived from the password.
type KeyFile struct {
	Version   int       `json:"version"`
	Created   time.Time `json:"created"`
	Hostname  string    `json:"hostname,omitempty"`
	Username  string    `json:"username,omitempty"`
	KDF       string    `json:"kdf"`
	Params    KDFParams `json:"kdf_params"`
	Salt      []byte    `json:"salt"`
	MasterKey []byte    `json:"master_key"`
}

const keyFileVersion = 1

// Bounds on the parameters of a (possibly planted) key file, so that
// trying it costs at most about 16x the default derivation (1 GiB, 3
// passes) rather than minutes and all the memory: cairn writes 64 MiB, 3
// passes, 4 lanes.
const (
	maxKDFMemoryKiB = 1024 * 1024
	maxKDFTime      = 10
	maxKDFThreads   = 16
)

// NewKeyFile seals the master key of k with a key derived from password.
func NewKeyFile(k *Key, password string, params KDFParams, host, user string) (*KeyFile, error) {
	salt := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, salt); err != nil {
		return nil, fmt.Errorf("read random salt: %w", err)
	}
	kek := deriveKEK(password, salt, params)
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, fmt.Errorf("init key-encryption aead: %w", err)
	}
	m := k.Master()
	return &KeyFile{
		Version:   keyFileVersion,
		Created:   time.Now().UTC(),
		Hostname:  host,
		Username:  user,
		KDF:       "argon2id",
		Params:    params,
		Salt:      salt,
		MasterKey: seal(aead, nil, m[:], nil),
	}, nil
}

func deriveKEK(password string, salt []byte, p KDFParams) []byte {
	return argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, chacha20poly1305.KeySize)
}

// ParseKeyFile decodes and validates a key file without opening it.
func ParseKeyFile(data []byte) (*KeyFile, error) {
	var kf KeyFile
	if err := json.Unmarshal(data, &kf); err != nil {
		return nil, fmt.Errorf("decode key file: %w", err)
	}
	if kf.Version != keyFileVersion {
		return nil, fmt.Errorf("key file version %d is not supported", kf.Version)
	}
	if kf.KDF != "argon2id" {
		return nil, fmt.Errorf("key file uses unknown kdf %q", kf.KDF)
	}
	p := kf.Params
	if p.Time < 1 || p.Time > maxKDFTime || p.Threads < 1 || p.Threads > maxKDFThreads || p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxKDFMemoryKiB {
		return nil, fmt.Errorf("key file has invalid kdf parameters (time %d, memory %d KiB, threads %d)", p.Time, p.MemoryKiB, p.Threads)
	}
	if len(kf.Salt) < 16 {
		return nil, fmt.Errorf("key file salt is %d bytes, want at least 16", len(kf.Salt))
	}
	if len(kf.MasterKey) != MasterKeySize+Overhead {
		return nil, fmt.Errorf("key file master key is %d bytes, want %d", len(kf.MasterKey), MasterKeySize+Overhead)
	}
	return &kf, nil
}

// Open derives the key-encryption key from password and unseals the master key.
// It returns ErrWrongPassword when authentication fails.
func (kf *KeyFile) Open(password string) (*Key, error) {
	kek := deriveKEK(password, kf.Salt, kf.Params)
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, fmt.Errorf("init key-encryption aead: %w", err)
	}
	m, err := open(aead, nil, kf.MasterKey, nil)
	if err != nil {
		return nil, ErrWrongPassword
	}
	var master [MasterKeySize]byte
	copy(master[:], m)
	return KeyFromMaster(master)
}

// Marshal encodes the key file as indented JSON.
func (kf *KeyFile) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode key file: %w", err)
	}
	return append(b, '\n'), nil
}
