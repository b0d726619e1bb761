package repo

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/restic/chunker"

	"github.com/cairn-backup/cairn/chunk"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo/backend"
)

// MaxInitPackSize is the largest pack size init accepts: every blob offset
// then fits the compact in-memory index entry (index/index.go).
const MaxInitPackSize = 32 << 20

// FormatVersion is the repository format init writes. This program reads
// versions MinFormatVersion to FormatVersion, and writes each repository
// in its own version until Migrate upgrades it.
const FormatVersion = 2

// MinFormatVersion is the oldest repository format this program reads.
const MinFormatVersion = 1

// configMagic precedes the sealed config so its version is readable without a key.
const configMagic = "CRNC"

// Chunking profiles: the keys of Config.Chunking.
const (
	ChunkingFiles    = "files"
	ChunkingDatabase = "database"
	// ChunkingAuto is not a profile: a stream with it is database
	// when it starts like a PostgreSQL dump or a Redis RDB file, else files.
	ChunkingAuto = "auto"
)

// Config is the repository's fixed configuration, written once by init.
type Config struct {
	Version     int                     `json:"version"`
	ID          string                  `json:"id"`
	Polynomial  chunker.Pol             `json:"chunker_polynomial"`
	Chunking    map[string]chunk.Params `json:"chunking"`
	PackSize    int                     `json:"pack_size"`
	Compression string                  `json:"compression"`
	// BlobIDKey, when set (version 2 only, 64 hex digits), is the key of
	// the keyed hash that names blobs, instead of the one derived from
	// the master key: init --from-repo copies its source's, so the same
	// data gets the same IDs in both repositories.
	BlobIDKey string `json:"blob_id_key,omitempty"`
	// ObjectLock, when set, gives every object written an S3 Object Lock
	// retention (init --s3-object-lock; docs/format.md §6).
	ObjectLock *ObjectLockConfig `json:"object_lock,omitempty"`
}

// ObjectLockConfig is the retention of a repository on a bucket with S3
// Object Lock: every object is locked in Mode for RetentionSeconds after
// it is written, and extended while it is still needed (cairn lock).
type ObjectLockConfig struct {
	Mode             backend.LockMode `json:"mode"`
	RetentionSeconds int64            `json:"retention_seconds"`
}

// Lock returns the retention as the backend takes it.
func (c ObjectLockConfig) Lock() backend.ObjectLock {
	return backend.ObjectLock{Mode: c.Mode, Period: time.Duration(c.RetentionSeconds) * time.Second}
}

// Template is what init --from-repo takes from another repository so that
// the same data is cut at the same places and gets the same blob IDs in
// both, while each keeps its own master and encryption keys (docs/
// format.md §6): copying between them then moves only what the
// destination lacks.
type Template struct {
	Polynomial chunker.Pol
	Chunking   map[string]chunk.Params
	BlobIDKey  [32]byte
}

// DefaultChunking returns the chunk parameters init writes: about 1 MiB for
// files, 256 KiB for database dumps (which change in scattered rows and are
// stored as deltas; see ../docs/format.md for the measurements behind the
// choice).
func DefaultChunking() map[string]chunk.Params {
	return map[string]chunk.Params{
		ChunkingFiles:    {Min: 512 << 10, AvgBits: 20, Max: 8 << 20},
		ChunkingDatabase: {Min: 64 << 10, AvgBits: 18, Max: 4 << 20},
	}
}

// ChunkParams returns the parameters of a chunking profile, falling back
// to files.
func (c Config) ChunkParams(profile string) chunk.Params {
	if p, ok := c.Chunking[profile]; ok {
		return p
	}
	return c.Chunking[ChunkingFiles]
}

func (c *Config) validate() error {
	if err := checkVersion(c.Version); err != nil {
		return err
	}
	if c.Polynomial.Deg() != 53 || !c.Polynomial.Irreducible() {
		return fmt.Errorf("config: chunker polynomial %v is not irreducible", c.Polynomial)
	}
	// Readers accept up to 128 MiB (blobs at offsets past 32 MiB go to the
	// index's overflow map); init writes at most 32 MiB (MaxInitPackSize).
	if c.PackSize < 1<<20 || c.PackSize > 128<<20 {
		return fmt.Errorf("config: pack size %d out of range 1 MiB..128 MiB", c.PackSize)
	}
	if _, ok := c.Chunking[ChunkingFiles]; !ok {
		return fmt.Errorf("config: no chunk parameters for %q", ChunkingFiles)
	}
	if _, err := hex.DecodeString(c.ID); err != nil || len(c.ID) != 64 {
		return fmt.Errorf("config: invalid repository id %q", c.ID)
	}
	if c.BlobIDKey != "" {
		if b, err := hex.DecodeString(c.BlobIDKey); err != nil || len(b) != 32 || c.Version < boundVersion {
			return fmt.Errorf("config: invalid blob ID key (64 hex digits, format version 2 or later)")
		}
	}
	if c.Compression != "zstd" {
		return fmt.Errorf("config: unknown compression %q", c.Compression)
	}
	if l := c.ObjectLock; l != nil {
		if _, err := backend.ParseLockMode(string(l.Mode)); err != nil || l.RetentionSeconds < 1 {
			return fmt.Errorf("config: invalid object lock %q for %d seconds", l.Mode, l.RetentionSeconds)
		}
	}
	for k, p := range c.Chunking {
		// The chunker's window is 64 bytes; smaller minimums never cut.
		if p.AvgBits < 10 || p.AvgBits > 24 || p.Min < 64 || uint(1)<<p.AvgBits < p.Min || p.Max <= p.Min || p.Max > 16<<20 {
			return fmt.Errorf("config: invalid chunk parameters for %q", k)
		}
	}
	return nil
}

// checkVersion reports a format version this program cannot read.
func checkVersion(v int) error {
	if v < MinFormatVersion || v > FormatVersion {
		return fmt.Errorf("repository format version %d is not supported (this cairn reads versions %d to %d)", v, MinFormatVersion, FormatVersion)
	}
	return nil
}

// encodeConfig seals c in its own format version: the magic, the version
// byte (readable without a key) and the sealed JSON, bound to the config
// type from version 2 on.
func encodeConfig(key *crypto.Key, c *Config) ([]byte, error) {
	js, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	b := append([]byte(configMagic), byte(c.Version))
	return append(b, sealFile(key, c.Version, adConfig, js)...), nil
}

// DecodeConfig opens and validates a stored config object.
func DecodeConfig(key *crypto.Key, data []byte) (*Config, error) {
	if len(data) < len(configMagic)+1 || string(data[:len(configMagic)]) != configMagic {
		return nil, fmt.Errorf("config: not a cairn repository (bad magic)")
	}
	v := int(data[len(configMagic)])
	if err := checkVersion(v); err != nil {
		return nil, err
	}
	// The version byte is not sealed; the version inside is, and must
	// agree, so a changed byte cannot make a v2 config read as v1.
	var js []byte
	var err error
	if v >= boundVersion {
		js, err = key.OpenFor(nil, data[len(configMagic)+1:], adConfig)
	} else {
		js, err = key.Open(nil, data[len(configMagic)+1:])
	}
	if err != nil {
		return nil, fmt.Errorf("open config: %w", err)
	}
	var c Config
	if err := json.Unmarshal(js, &c); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	if c.Version != v {
		return nil, fmt.Errorf("config: version %d inside, %d outside", c.Version, v)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// keyFor returns the key a repository with config c uses: the master's
// derived blob-ID key, or the one the config names.
func keyFor(key *crypto.Key, c *Config) *crypto.Key {
	if c.BlobIDKey == "" {
		return key
	}
	var id [32]byte
	hex.Decode(id[:], []byte(c.BlobIDKey)) // validated
	return key.WithIDKey(id)
}
