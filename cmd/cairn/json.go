package main

import (
	"time"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/internal/pruner"
	"github.com/cairn-backup/cairn/internal/repair"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/restorer"
)

// The --json messages of the commands. Field names follow restic's where
// restic has the same message; message_type says which message it is.

type initJSON struct {
	MessageType string `json:"message_type"` // "initialized"
	ID          string `json:"id"`
	Repository  string `json:"repository"`
}

type checkFindingJSON struct {
	Severity string `json:"severity"` // "error" or "note"
	Object   string `json:"object,omitempty"`
	Message  string `json:"message"`
}

type checkJSON struct {
	MessageType  string             `json:"message_type"` // "check_summary"
	Errors       int                `json:"errors"`
	Findings     []checkFindingJSON `json:"findings"`
	Snapshots    int                `json:"snapshots"`
	IndexFiles   int                `json:"index_files"`
	Packs        int                `json:"packs"`
	PacksRead    int                `json:"packs_read"`
	BlobsChecked int                `json:"blobs_checked"`
}

type backupJSON struct {
	MessageType         string  `json:"message_type"` // "summary"
	SnapshotID          string  `json:"snapshot_id"`
	FilesNew            uint64  `json:"files_new"`
	FilesChanged        uint64  `json:"files_changed"`
	FilesUnmodified     uint64  `json:"files_unmodified"`
	DirsNew             uint64  `json:"dirs_new"`
	DirsChanged         uint64  `json:"dirs_changed"`
	DirsUnmodified      uint64  `json:"dirs_unmodified"`
	DataBlobs           uint64  `json:"data_blobs"`
	DeltaBlobs          uint64  `json:"delta_blobs"`
	TreeBlobs           uint64  `json:"tree_blobs"`
	DataAdded           uint64  `json:"data_added"`
	DataAddedPacked     uint64  `json:"data_added_packed"`
	TotalFilesProcessed uint64  `json:"total_files_processed"`
	TotalBytesProcessed uint64  `json:"total_bytes_processed"`
	TotalDuration       float64 `json:"total_duration"` // seconds
	FilesRead           int64   `json:"files_read"`     // read in full, not taken from the parent
}

func newBackupJSON(id crypto.ID, res *archiver.Result, seconds float64) backupJSON {
	s := res.Summary
	return backupJSON{
		MessageType: "summary", SnapshotID: id.String(),
		FilesNew: s.FilesNew, FilesChanged: s.FilesChanged, FilesUnmodified: s.FilesUnmodified,
		DirsNew: s.DirsNew, DirsChanged: s.DirsChanged, DirsUnmodified: s.DirsUnmodified,
		DataBlobs: s.DataBlobs, DeltaBlobs: s.DeltaBlobs, TreeBlobs: s.TreeBlobs,
		DataAdded: s.DataAdded, DataAddedPacked: s.DataAddedPacked,
		TotalFilesProcessed: s.TotalFilesProcessed, TotalBytesProcessed: s.TotalBytesProcessed,
		TotalDuration: seconds, FilesRead: res.FilesRead,
	}
}

// statusJSON is restic's backup status line, at most once a second.
type statusJSON struct {
	MessageType    string  `json:"message_type"` // "status"
	SecondsElapsed uint64  `json:"seconds_elapsed"`
	PercentDone    float64 `json:"percent_done"` // 0 until the totals are known
	TotalFiles     uint64  `json:"total_files"`
	FilesDone      uint64  `json:"files_done"`
	TotalBytes     uint64  `json:"total_bytes"`
	BytesDone      uint64  `json:"bytes_done"`
	ErrorCount     uint64  `json:"error_count"`
}

func newStatusJSON(p *archiver.Progress, errs int64, elapsed time.Duration) statusJSON {
	s := statusJSON{MessageType: "status", SecondsElapsed: uint64(elapsed.Seconds()),
		FilesDone: uint64(p.Files.Load()), BytesDone: uint64(p.Bytes.Load()), ErrorCount: uint64(errs)}
	if p.ScanDone.Load() {
		s.TotalFiles, s.TotalBytes = uint64(p.TotalFiles.Load()), uint64(p.TotalBytes.Load())
		if s.TotalBytes > 0 {
			s.PercentDone = min(1, float64(s.BytesDone)/float64(s.TotalBytes))
		}
	}
	return s
}

// errorJSON is restic's error message (on stderr): a file that could not
// be read, during "archival".
type errorJSON struct {
	MessageType string `json:"message_type"` // "error"
	Error       struct {
		Message string `json:"message"`
	} `json:"error"`
	During string `json:"during"`
	Item   string `json:"item"`
}

func newErrorJSON(err error, during, item string) errorJSON {
	e := errorJSON{MessageType: "error", During: during, Item: item}
	e.Error.Message = err.Error()
	return e
}

// exitErrorJSON is restic's last message of a failed command (on stderr).
type exitErrorJSON struct {
	MessageType string `json:"message_type"` // "exit_error"
	Code        int    `json:"code"`
	Message     string `json:"message"`
}

type restoreJSON struct {
	MessageType   string `json:"message_type"` // "summary"
	SnapshotID    string `json:"snapshot_id"`
	FilesRestored int    `json:"files_restored"`
	DirsRestored  int    `json:"dirs_restored"`
	LinksRestored int    `json:"links_restored"`
	BytesRestored uint64 `json:"bytes_restored"`
	FilesFailed   int    `json:"files_failed"`
	FilesDeleted  int    `json:"files_deleted"`
	// Partial names the files left incomplete (NAME.cairn-partial).
	Partial       []string `json:"partial_files"`
	Errors        int      `json:"errors"`
	TotalDuration float64  `json:"total_duration"` // seconds
}

func newRestoreJSON(id crypto.ID, st restorer.Stats, seconds float64) restoreJSON {
	return restoreJSON{MessageType: "summary", SnapshotID: id.String(), FilesRestored: st.Files, DirsRestored: st.Dirs,
		LinksRestored: st.Links, BytesRestored: st.Bytes, FilesFailed: st.FilesFailed, FilesDeleted: st.Deleted, Partial: nonNil(st.Partial), Errors: st.Warnings, TotalDuration: seconds}
}

type repairIndexJSON struct {
	MessageType   string   `json:"message_type"` // "repair_index"
	Packs         int      `json:"packs"`
	Blobs         int      `json:"blobs"`
	BadPacks      []string `json:"bad_packs"`
	OldIndexFiles int      `json:"old_index_files"`
	NewIndexFiles int      `json:"new_index_files"`
}

func newRepairIndexJSON(st repair.IndexStats) repairIndexJSON {
	return repairIndexJSON{MessageType: "repair_index", Packs: st.Packs, Blobs: st.Blobs, BadPacks: st.BadPacks,
		OldIndexFiles: st.OldIndexFiles, NewIndexFiles: st.NewIndexFiles}
}

type repairSnapshotsJSON struct {
	MessageType  string   `json:"message_type"` // "repair_snapshots"
	DryRun       bool     `json:"dry_run"`
	Checked      int      `json:"checked"`
	Repaired     int      `json:"repaired"`
	DamagedFiles []string `json:"damaged_files"`
	DamagedDirs  []string `json:"damaged_dirs"`
	Removed      int      `json:"removed"`
}

func newRepairSnapshotsJSON(st repair.SnapshotStats, dryRun bool) repairSnapshotsJSON {
	return repairSnapshotsJSON{MessageType: "repair_snapshots", DryRun: dryRun, Checked: st.Checked, Repaired: st.Repaired,
		DamagedFiles: st.DamagedFiles, DamagedDirs: st.DamagedDirs, Removed: st.Removed}
}

type migrateJSON struct {
	MessageType   string             `json:"message_type"` // "migrate"
	From          int                `json:"from_version"`
	To            int                `json:"to_version"`
	IndexFilesIn  int                `json:"old_index_files"`
	IndexFilesOut int                `json:"new_index_files"`
	Snapshots     []snapshotMoveJSON `json:"snapshots"`
}

type snapshotMoveJSON struct {
	Old string `json:"old_id"`
	New string `json:"new_id"`
}

func newMigrateJSON(res *repo.MigrateResult) migrateJSON {
	out := migrateJSON{MessageType: "migrate", From: res.From, To: res.To, IndexFilesIn: res.IndexFilesIn, IndexFilesOut: res.IndexFilesOut,
		Snapshots: []snapshotMoveJSON{}}
	for _, m := range res.Snapshots {
		out.Snapshots = append(out.Snapshots, snapshotMoveJSON{Old: m.Old.String(), New: m.New.String()})
	}
	return out
}

type copiedJSON struct {
	MessageType string `json:"message_type"` // "copied"
	Offsite     string `json:"offsite,omitempty"`
	From        string `json:"source_snapshot"`
	To          string `json:"snapshot_id"`
	Blobs       int    `json:"blobs_copied"`
	Stored      int64  `json:"bytes_stored"`
}

type copySummaryJSON struct {
	MessageType   string  `json:"message_type"` // "copy_summary"
	Copied        int     `json:"snapshots_copied"`
	Present       int     `json:"snapshots_present"`
	Blobs         int     `json:"blobs_copied"`
	Stored        int64   `json:"bytes_stored"`
	WALCopied     int     `json:"wal_files_copied,omitempty"` // with --wal
	WALPresent    int     `json:"wal_files_present,omitempty"`
	TotalDuration float64 `json:"total_duration"`
}

type statsJSON struct {
	SnapshotsCount      int    `json:"snapshots_count"`
	TotalFileCount      uint64 `json:"total_file_count"`
	TotalSize           uint64 `json:"total_size"` // restore size of all snapshots
	TotalBlobCount      uint64 `json:"total_blob_count"`
	DataBlobCount       uint64 `json:"data_blob_count"`
	TreeBlobCount       uint64 `json:"tree_blob_count"`
	TotalStoredBlobSize uint64 `json:"total_stored_blob_size"`
	PackCount           uint64 `json:"pack_count"`
	TotalPackSize       uint64 `json:"total_pack_size"`
}

type diffJSON struct {
	MessageType    string `json:"message_type"` // "statistics"
	SourceSnapshot string `json:"source_snapshot"`
	TargetSnapshot string `json:"target_snapshot"`
	Added          int    `json:"added"`
	Removed        int    `json:"removed"`
	Changed        int    `json:"changed"`
	AddedBytes     uint64 `json:"added_bytes"`
	RemovedBytes   uint64 `json:"removed_bytes"`
}

type pruneJSON struct {
	MessageType          string `json:"message_type"` // "prune_summary"
	DryRun               bool   `json:"dry_run"`
	Snapshots            int    `json:"snapshots"`
	UsedBlobs            int    `json:"used_blobs"`
	PacksKept            int    `json:"packs_kept"`
	PacksRepacked        int    `json:"packs_repacked"`
	PacksMarkedUnused    int    `json:"packs_marked_unused"`
	PacksPendingDeletion int    `json:"packs_pending_deletion"`
	PacksDeleted         int    `json:"packs_deleted"`
	PacksResurrected     int    `json:"packs_resurrected"`
	StrayPacks           int    `json:"stray_packs"`
	BlobsRepacked        int    `json:"blobs_repacked"`
	BytesRepacked        int64  `json:"bytes_repacked"`
	BytesFreed           int64  `json:"bytes_freed"`
	BytesPendingDeletion int64  `json:"bytes_pending_deletion"`
	IndexFilesReplaced   int    `json:"index_files_replaced"`
	IndexFilesWritten    int    `json:"index_files_written"`
}

// lockJSON reports lock extend, and the object lock part of prune.
type lockJSON struct {
	MessageType string     `json:"message_type"` // "lock_extend" or "lock_maintenance"
	Extended    int        `json:"extended"`     // objects whose retention was extended
	Until       time.Time  `json:"until,omitzero"`
	LastPass    time.Time  `json:"last_pass,omitzero"`
	Purged      int        `json:"purged,omitempty"` // versions of removed objects deleted
	PurgedBytes int64      `json:"purged_bytes,omitempty"`
	Locked      int        `json:"locked,omitempty"` // versions of removed objects still locked
	LockedBytes int64      `json:"locked_bytes,omitempty"`
	FirstUnlock *time.Time `json:"first_unlock,omitempty"`
	LastUnlock  *time.Time `json:"last_unlock,omitempty"`
	Restored    int        `json:"restored,omitempty"`
	Foreign     int        `json:"foreign,omitempty"` // of those, hidden with no removal record
	Overwritten int        `json:"overwritten,omitempty"`
}

func newPruneJSON(st pruner.Stats, dryRun bool) pruneJSON {
	return pruneJSON{MessageType: "prune_summary", DryRun: dryRun, Snapshots: st.Snapshots, UsedBlobs: st.UsedBlobs,
		PacksKept: st.PacksKept, PacksRepacked: st.PacksRepacked, PacksMarkedUnused: st.PacksMarked,
		PacksPendingDeletion: st.PacksPending, PacksDeleted: st.PacksDeleted, PacksResurrected: st.PacksResurrected,
		StrayPacks: st.StrayPacks, BlobsRepacked: st.BlobsRepacked, BytesRepacked: st.BytesRepacked,
		BytesFreed: st.BytesFreed, BytesPendingDeletion: st.BytesPending,
		IndexFilesReplaced: st.IndexFilesIn, IndexFilesWritten: st.IndexFilesOut}
}
