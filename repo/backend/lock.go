package backend

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// LockMode is an S3 Object Lock retention mode.
type LockMode string

// The two retention modes. Under GOVERNANCE, credentials with
// s3:BypassGovernanceRetention may still delete a locked object; under
// COMPLIANCE nobody can, not even the account's root, until the date.
const (
	Governance LockMode = "GOVERNANCE"
	Compliance LockMode = "COMPLIANCE"
)

// ParseLockMode accepts governance or compliance in any case.
func ParseLockMode(s string) (LockMode, error) {
	switch m := LockMode(strings.ToUpper(strings.TrimSpace(s))); m {
	case Governance, Compliance:
		return m, nil
	}
	return "", fmt.Errorf("invalid object lock mode %q: want governance or compliance", s)
}

// ObjectLock is the retention every object written gets: locked in Mode
// until Period after the write.
type ObjectLock struct {
	Mode   LockMode
	Period time.Duration
}

// Locker is storage that can keep objects from deletion for a time (S3
// Object Lock on a versioned bucket). Once UseObjectLock was called,
// Save gives every object a retain-until date and Remove only hides an
// object (a delete marker): its data stays, undeletable, until the date,
// and Purge deletes it later.
type Locker interface {
	// UseObjectLock makes every later write carry the retention l.
	UseObjectLock(l ObjectLock)
	// CheckObjectLock fails unless the bucket has object locking enabled.
	CheckObjectLock(ctx context.Context) error
	// Retain moves the retain-until date of h's current version to until.
	// S3 refuses to shorten a COMPLIANCE date; callers only extend.
	Retain(ctx context.Context, h Handle, until time.Time) error
	// RetainedUntil returns the retain-until date of h's current version
	// (zero when it has none).
	RetainedUntil(ctx context.Context, h Handle) (time.Time, error)
	// Purge deletes the versions of removed (hidden) objects whose
	// retention has passed, and then their delete markers. A removed
	// object that keep reports as still needed is made visible again
	// instead (its delete marker is deleted). It never deletes older
	// versions of an object that is still visible, except the config's.
	Purge(ctx context.Context, opts PurgeOptions) (PurgeStats, error)
}

// PurgeOptions direct a Purge.
type PurgeOptions struct {
	Now time.Time
	// Keep reports a removed object that is still needed.
	Keep func(Handle) bool
	// Removed reports an object that cairn recorded removing (a removal
	// record). Any other hidden object was hidden by someone else: it is
	// made visible again, never deleted. Removal records themselves are
	// purged like removed objects.
	Removed func(Handle) bool
	// PassStart and PassUntil describe the last retention extension
	// known (zero if none): objects visible when it started are locked
	// until PassUntil at least, so Purge does not try to delete them
	// before (a refused delete costs a request and a retention read).
	PassStart, PassUntil time.Time
}

// PurgeStats reports what Purge did and what it had to leave.
type PurgeStats struct {
	Deleted      int   // object versions deleted
	DeletedBytes int64 // their size
	Locked       int   // versions of removed objects still locked
	LockedBytes  int64
	// FirstUnlock and LastUnlock bound when the locked versions become
	// deletable (zero when none is locked).
	FirstUnlock, LastUnlock time.Time
	Restored                int // removed objects made visible again (keep)
	Foreign                 int // of those, hidden by someone else (no removal record)
	Overwritten             int // visible objects with older versions (left alone)
}

// AsLocker returns the Locker behind be (looking through wrappers such as
// the local cache), if the storage has one.
func AsLocker(be Backend) (Locker, bool) {
	for {
		if l, ok := be.(Locker); ok {
			return l, true
		}
		w, ok := be.(interface{ Unwrap() Backend })
		if !ok {
			return nil, false
		}
		be = w.Unwrap()
	}
}
