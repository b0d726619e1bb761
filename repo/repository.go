// Package repo is the repository: configuration, keys, packs of encrypted
// blobs, index files and snapshots, on top of a storage backend.
package repo

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/user"
	"runtime"
	"runtime/debug"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/restic/chunker"

	"github.com/cairn-backup/cairn/chunk"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
)

// Errors callers branch on.
var (
	// ErrNoRepository: no config object at the location.
	ErrNoRepository = errors.New("repository does not exist")
	// ErrAlreadyExists: init found a repository.
	ErrAlreadyExists = errors.New("a repository already exists there")
	// ErrWrongPassword: no key file opens with the password.
	ErrWrongPassword = crypto.ErrWrongPassword
	// ErrLastKey: removing the only key would lock everyone out.
	ErrLastKey = errors.New("refusing to remove the last key")
)

// Options tune a repository handle; zero values take defaults.
type Options struct {
	// PackSize is the target pack size at init (default 16 MiB).
	PackSize int
	// Uploads is the number of concurrent pack uploads (default 2).
	Uploads int
	// KDF overrides the argon2id parameters of new key files (tests only).
	KDF *crypto.KDFParams
	// Chunking overrides chunk parameters at init (tests only).
	Chunking map[string]chunk.Params
	// BaseWindow is how much of a pack a delta base read fetches beyond
	// the blob, for the blobs after it (default 1 MiB; window.go).
	BaseWindow int
	// WrapBackend, when set, is given the repository's ID once the config
	// is known and returns the backend to use from then on (the local
	// metadata cache wraps a remote backend this way).
	WrapBackend func(repoID string, be backend.Backend) backend.Backend
	// From makes init take another repository's chunking and blob IDs
	// (init --from-repo).
	From *Template
	// FormatVersion is the format init writes (default FormatVersion;
	// tests of older formats and of Migrate set 1).
	FormatVersion int
	// SnapshotsListed, when set, is given every complete listing of the
	// snapshots (ListSnapshots without unreadable ones).
	SnapshotsListed func([]*Snapshot)
	// PreferKey names the key file to try first (the one that opened the
	// repository last time, Repository.KeyID): when it opens, no other key
	// file is read. A wrong or missing name only costs the usual order.
	PreferKey string
	// ListAhead names the object types whose listings the caller will
	// need: on storage where a listing costs a round trip they start at
	// once, alongside the key derivation (backend.ListAheader).
	ListAhead []backend.FileType
	// DerivedKey, with PreferKey, returns the key of PreferKey's file,
	// derived ahead from a local copy of that file (the same bytes: names
	// are hashes). OpenConfig uses it instead of deriving again, but only
	// once it has read PreferKey from the repository: a key file removed
	// from the repository (revoked) never opens it.
	DerivedKey func() (*crypto.Key, error)
	// ObjectLock makes init create a repository whose objects are locked
	// (S3 Object Lock; the bucket is made with locking if init makes it).
	ObjectLock *ObjectLockConfig
}

// Repository is an open repository. Its methods are safe for concurrent use.
type Repository struct {
	be backend.Backend
	// bgCtx bounds background pack uploads. It is the context given to
	// Open or Init, not a per-call one: a caller's short-lived context
	// (one archiver run, one SaveBlob) must not cancel an upload that
	// other blobs share.
	bgCtx context.Context
	key   *crypto.Key
	keyID string
	// keyFile is the stored key file keyID (OpenConfig).
	keyFile []byte
	cfg     Config
	opts    Options
	idx     *index.Index
	// obsolete indexes packs awaiting deletion: readable, never deduplicated against.
	obsolete *index.Index
	enc      *zstd.Encoder
	dec      *zstd.Decoder

	mu       sync.Mutex
	inFlight map[crypto.ID]struct{}
	packers  [2]*packer
	// uploads
	uploadSem chan struct{}
	uploadWG  sync.WaitGroup
	uploadErr error
	unindexed []index.PackEntry // uploaded packs not yet in an index file
	idxBlobs  int
	indexMu   sync.Mutex // serializes index file writes
	bufs      chunk.BufferPool
	deltaEncs sync.Pool // *delta.Encoder, reused across delta blobs
	headDecs  sync.Pool // *zstd.Decoder (streaming) for BlobHead
	baseBufs  sync.Pool // *[]byte: delta bases being decoded (applyDelta)
	// bases maps each indexed delta blob to its base (only deltas, so it
	// stays small next to the index); guarded by mu.
	bases map[crypto.ID]crypto.ID
	// windows caches pack windows read for delta bases.
	windows windowCache
}

func (o *Options) withDefaults() Options {
	v := *o
	if v.PackSize == 0 {
		v.PackSize = 16 << 20
	}
	if v.Uploads == 0 {
		v.Uploads = 2
	}
	if v.BaseWindow <= 0 {
		v.BaseWindow = defaultBaseWindow
	}
	return v
}

func newRepository(ctx context.Context, be backend.Backend, key *crypto.Key, keyID string, cfg *Config, opts Options) (*Repository, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(1<<20), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, fmt.Errorf("init zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderMaxMemory(maxBlobSize))
	if err != nil {
		return nil, fmt.Errorf("init zstd decoder: %w", err)
	}
	if l := cfg.ObjectLock; l != nil {
		locker, ok := backend.AsLocker(be)
		if !ok {
			return nil, fmt.Errorf("%s: the repository locks its objects (S3 Object Lock), which this storage cannot", be.Location())
		}
		locker.UseObjectLock(l.Lock())
	}
	if opts.WrapBackend != nil {
		be = opts.WrapBackend(cfg.ID, be)
	}
	r := &Repository{
		be: be, bgCtx: ctx, key: key, keyID: keyID, cfg: *cfg, opts: opts,
		idx: index.New(), obsolete: index.New(), enc: enc, dec: dec,
		inFlight:  make(map[crypto.ID]struct{}),
		uploadSem: make(chan struct{}, opts.Uploads),
	}
	return r, nil
}

// Init creates a repository in be, protected by password.
func Init(ctx context.Context, be backend.Backend, password string, opts Options) (*Repository, error) {
	opts = opts.withDefaults()
	if _, err := be.Stat(ctx, backend.Handle{Type: backend.Config}); err == nil {
		return nil, fmt.Errorf("init %s: %w", be.Location(), ErrAlreadyExists)
	} else if !backend.IsNotFound(err) {
		return nil, fmt.Errorf("init %s: %w", be.Location(), err)
	}
	var locker backend.Locker
	if l := opts.ObjectLock; l != nil {
		var ok bool
		if locker, ok = backend.AsLocker(be); !ok {
			return nil, fmt.Errorf("init %s: object lock needs an S3 repository", be.Location())
		}
		locker.UseObjectLock(l.Lock())
	}
	if c, ok := be.(interface{ Create(context.Context) error }); ok {
		if err := c.Create(ctx); err != nil {
			return nil, err
		}
	}
	if locker != nil {
		if err := locker.CheckObjectLock(ctx); err != nil {
			return nil, fmt.Errorf("init %s: %w", be.Location(), err)
		}
	}
	pol, err := chunker.RandomPolynomial()
	if err != nil {
		return nil, fmt.Errorf("choose chunker polynomial: %w", err)
	}
	var rid [32]byte
	if _, err := rand.Read(rid[:]); err != nil {
		return nil, fmt.Errorf("choose repository id: %w", err)
	}
	cfg := &Config{
		Version:     cmp.Or(opts.FormatVersion, FormatVersion),
		ID:          hex.EncodeToString(rid[:]),
		Polynomial:  pol,
		Chunking:    DefaultChunking(),
		PackSize:    opts.PackSize,
		Compression: "zstd",
		ObjectLock:  opts.ObjectLock,
	}
	if opts.Chunking != nil {
		cfg.Chunking = opts.Chunking
	}
	if t := opts.From; t != nil {
		cfg.Polynomial, cfg.Chunking, cfg.BlobIDKey = t.Polynomial, t.Chunking, hex.EncodeToString(t.BlobIDKey[:])
	}
	if cfg.PackSize > MaxInitPackSize {
		return nil, fmt.Errorf("pack size %d MiB is above the %d MiB limit", cfg.PackSize>>20, MaxInitPackSize>>20)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	key, err := crypto.NewRandomKey()
	if err != nil {
		return nil, err
	}
	r, err := newRepository(ctx, be, keyFor(key, cfg), "", cfg, opts)
	if err != nil {
		return nil, err
	}
	// The key file goes first: a config without a key would be unusable,
	// a key without a config is just not a repository yet.
	keyID, err := r.AddKey(ctx, password)
	if err != nil {
		return nil, err
	}
	r.keyID = keyID
	data, err := encodeConfig(key, cfg)
	if err != nil {
		return nil, err
	}
	if err := be.Save(ctx, backend.Handle{Type: backend.Config}, data); err != nil {
		return nil, fmt.Errorf("save config: %w", err)
	}
	// Saving an existing name counts as success (write-once), so a second
	// init racing this one may have won: read the config back and make
	// sure it is ours before handing out the repository.
	stored, err := be.Load(ctx, backend.Handle{Type: backend.Config}, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("read back config: %w", err)
	}
	if _, err := DecodeConfig(key, stored); err != nil {
		_ = be.Remove(ctx, backend.Handle{Type: backend.Key, Name: keyID})
		return nil, fmt.Errorf("init %s: %w (another init ran at the same time)", be.Location(), ErrAlreadyExists)
	}
	return r, nil
}

// Open unlocks the repository with password. ctx also bounds the
// repository's background uploads for the lifetime of the handle. It returns ErrNoRepository when
// there is no config and ErrWrongPassword when no key opens.
func Open(ctx context.Context, be backend.Backend, password string, opts Options) (*Repository, error) {
	cfgData, err := ReadConfig(ctx, be)
	if err != nil {
		return nil, err
	}
	return OpenConfig(ctx, be, cfgData, password, opts)
}

// ReadConfig loads the stored (sealed) config object, failing with
// ErrNoRepository when there is none. A caller that must know whether a
// repository exists before asking for a password reads it first and hands
// it to OpenConfig: one request instead of two.
func ReadConfig(ctx context.Context, be backend.Backend) ([]byte, error) {
	cfgData, err := be.Load(ctx, backend.Handle{Type: backend.Config}, 0, 0)
	if err != nil {
		if backend.IsNotFound(err) {
			return nil, fmt.Errorf("%s: %w", be.Location(), ErrNoRepository)
		}
		return nil, fmt.Errorf("load config: %w", err)
	}
	return cfgData, nil
}

// OpenConfig is Open with the config object already read (ReadConfig).
func OpenConfig(ctx context.Context, be backend.Backend, cfgData []byte, password string, opts Options) (*Repository, error) {
	opts = opts.withDefaults()
	backend.ListAhead(ctx, be, opts.ListAhead...)
	// The key file that opened the repository last time is read by its
	// name, without a listing first: one round trip instead of two. A key
	// removed since (revoked) is not found, and the usual order follows.
	preferTried := false
	if opts.PreferKey != "" {
		kf, data, err := loadKeyFile(ctx, be, opts.PreferKey)
		if err == nil {
			var k *crypto.Key
			if opts.DerivedKey != nil {
				k, err = opts.DerivedKey()
			} else {
				k, err = kf.Open(password)
			}
			if err == nil {
				return openWithKey(ctx, be, k, opts.PreferKey, data, cfgData, opts)
			}
			preferTried = true
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	var names []string
	err := be.List(ctx, backend.Key, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	sort.Strings(names)
	var kfs []namedKeyFile
	for _, name := range names {
		if preferTried && name == opts.PreferKey {
			continue // its derivation failed above
		}
		kf, data, err := loadKeyFile(ctx, be, name)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue // a damaged key file must not lock out the others; check reports it
		}
		kfs = append(kfs, namedKeyFile{name, kf, data})
	}
	cheapestFirst(kfs)
	for _, f := range kfs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if k, err := f.kf.Open(password); err == nil {
			return openWithKey(ctx, be, k, f.name, f.data, cfgData, opts)
		}
	}
	return nil, ErrWrongPassword
}

// openWithKey finishes OpenConfig once key file keyID (stored as
// keyFile) gave the key.
func openWithKey(ctx context.Context, be backend.Backend, key *crypto.Key, keyID string, keyFile, cfgData []byte, opts Options) (*Repository, error) {
	// Key derivation allocated 64 MiB that is garbage now; left to the
	// collector it would double the heap goal of the whole run.
	debug.FreeOSMemory()
	cfg, err := DecodeConfig(key, cfgData)
	if err != nil {
		return nil, err
	}
	r, err := newRepository(ctx, be, keyFor(key, cfg), keyID, cfg, opts)
	if err != nil {
		return nil, err
	}
	r.keyFile = keyFile
	return r, nil
}

type namedKeyFile struct {
	name string
	kf   *crypto.KeyFile
	data []byte
}

// cheapestFirst orders key files by the cost of their derivation (then by
// name, as listed), so that a key file planted with costly parameters, or
// many of them, is tried after the real ones.
func cheapestFirst(kfs []namedKeyFile) {
	cost := func(kf *crypto.KeyFile) uint64 { return uint64(kf.Params.Time) * uint64(kf.Params.MemoryKiB) }
	sort.SliceStable(kfs, func(i, j int) bool { return cost(kfs[i].kf) < cost(kfs[j].kf) })
}

// loadKeyFile reads key file name and returns it parsed and as stored.
func loadKeyFile(ctx context.Context, be backend.Backend, name string) (*crypto.KeyFile, []byte, error) {
	data, err := be.Load(ctx, backend.Handle{Type: backend.Key, Name: name}, 0, 0)
	if err != nil {
		return nil, nil, err
	}
	if crypto.Hash(data).String() != name {
		return nil, nil, fmt.Errorf("key %s: content does not match its name", name)
	}
	kf, err := crypto.ParseKeyFile(data)
	return kf, data, err
}

// Backend returns the storage backend.
func (r *Repository) Backend() backend.Backend { return r.be }

// Config returns the repository configuration.
func (r *Repository) Config() Config { return r.cfg }

// Template returns what a repository made from this one shares with it
// (init --from-repo).
func (r *Repository) Template() Template {
	return Template{Polynomial: r.cfg.Polynomial, Chunking: r.cfg.Chunking, BlobIDKey: r.key.IDKey()}
}

// Key returns the master key.
func (r *Repository) Key() *crypto.Key { return r.key }

// Index returns the in-memory index.
func (r *Repository) Index() *index.Index { return r.idx }

// KeyID returns the name of the key file that unlocked the repository.
func (r *Repository) KeyID() string { return r.keyID }

// KeyFile returns that key file as stored (encrypted; nil for a
// repository this process created).
func (r *Repository) KeyFile() []byte { return r.keyFile }

// Close releases the compressors; it does not flush.
func (r *Repository) Close() error {
	r.mu.Lock()
	for t, p := range r.packers {
		if p != nil {
			p.discard() // never flushed: nothing refers to it
			r.packers[t] = nil
		}
	}
	r.mu.Unlock()
	r.enc.Close()
	r.dec.Close()
	return r.be.Close()
}

// KeyInfo describes one key file.
type KeyInfo struct {
	ID       string
	Current  bool
	Username string
	Hostname string
	Created  string
}

// AddKey stores a new key file for password and returns its name.
func (r *Repository) AddKey(ctx context.Context, password string) (string, error) {
	params := crypto.DefaultKDFParams()
	if r.opts.KDF != nil {
		params = *r.opts.KDF
	}
	host, _ := os.Hostname()
	var uname string
	if u, err := user.Current(); err == nil {
		uname = u.Username
	}
	kf, err := crypto.NewKeyFile(r.key, password, params, host, uname)
	if err != nil {
		return "", err
	}
	data, err := kf.Marshal()
	if err != nil {
		return "", err
	}
	name := crypto.Hash(data).String()
	if err := r.be.Save(ctx, backend.Handle{Type: backend.Key, Name: name}, data); err != nil {
		return "", fmt.Errorf("save key: %w", err)
	}
	return name, nil
}

// ListKeys describes every key file.
func (r *Repository) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	var out []KeyInfo
	err := r.be.List(ctx, backend.Key, func(fi backend.FileInfo) error {
		info := KeyInfo{ID: fi.Name, Current: fi.Name == r.keyID}
		if kf, _, err := loadKeyFile(ctx, r.be, fi.Name); err == nil {
			info.Username, info.Hostname = kf.Username, kf.Hostname
			info.Created = kf.Created.Format("2006-01-02 15:04:05")
		} else {
			info.Created = "damaged: " + err.Error()
		}
		out = append(out, info)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// RemoveKey deletes the key file whose name starts with prefix. The last
// key and the key in use cannot be removed.
func (r *Repository) RemoveKey(ctx context.Context, prefix string) (string, error) {
	keys, err := r.ListKeys(ctx)
	if err != nil {
		return "", err
	}
	var match []string
	for _, k := range keys {
		if len(prefix) > 0 && len(k.ID) >= len(prefix) && k.ID[:len(prefix)] == prefix {
			match = append(match, k.ID)
		}
	}
	switch {
	case len(match) == 0:
		return "", fmt.Errorf("no key matches %q", prefix)
	case len(match) > 1:
		return "", fmt.Errorf("key prefix %q is ambiguous (%d keys)", prefix, len(match))
	}
	if len(keys) == 1 {
		return "", ErrLastKey
	}
	if match[0] == r.keyID {
		return "", fmt.Errorf("refusing to remove the key in use (%s); open the repository with another password", match[0][:8])
	}
	if err := r.Remove(ctx, backend.Handle{Type: backend.Key, Name: match[0]}); err != nil {
		return "", err
	}
	return match[0], nil
}

// ChangePassword adds a key for newPassword and removes the current one.
func (r *Repository) ChangePassword(ctx context.Context, newPassword string) (string, error) {
	old := r.keyID
	id, err := r.AddKey(ctx, newPassword)
	if err != nil {
		return "", err
	}
	r.keyID = id
	if old != "" && old != id {
		if err := r.Remove(ctx, backend.Handle{Type: backend.Key, Name: old}); err != nil {
			return id, fmt.Errorf("new key %s added, but removing the old key failed: %w", id[:8], err)
		}
	}
	return id, nil
}
