package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/bench/latencyproxy"
)

// Measure is one tool's run of one phase.
type Measure struct {
	Seconds   float64 `json:"seconds"`
	MaxRSSKiB int64   `json:"max_rss_kib"`
	// RepoBytes is the repository's size after the phase (the sum of its
	// files' sizes); GrowthBytes what the phase added (backups only).
	RepoBytes   int64 `json:"repo_bytes"`
	GrowthBytes int64 `json:"growth_bytes,omitempty"`
	// InputBytes is what was backed up or restored; MBps is InputBytes per
	// second in 10^6 bytes.
	InputBytes int64   `json:"input_bytes,omitempty"`
	MBps       float64 `json:"mb_per_s,omitempty"`
	// From the backup's --json summary (restic's field names).
	DataAdded       int64  `json:"data_added,omitempty"`
	DataAddedPacked int64  `json:"data_added_packed,omitempty"`
	SnapshotID      string `json:"snapshot_id,omitempty"`
	// Requests are the S3 requests of the phase by class, counted by the
	// latency proxy (s3 data set only).
	Requests *latencyproxy.Counts `json:"requests,omitempty"`
	Command  string               `json:"command"`
	// Runs are the wall times of every run of a phase measured several
	// times (pairRepeated); the figures above are the median run's.
	Runs []float64 `json:"runs,omitempty"`
}

// Row is one phase of one data set: cairn and restic side by side. In a
// variant row (another way to run cairn, e.g. --pg against the live
// database) the restic column repeats restic's figures of the main row of
// the same phase, for comparison.
type Row struct {
	Dataset     string   `json:"dataset"`
	Variant     string   `json:"variant,omitempty"`
	Phase       string   `json:"phase"`
	Backup      bool     `json:"backup"`
	Cairn       *Measure `json:"cairn"`
	Restic      *Measure `json:"restic"`
	ResticRef   bool     `json:"restic_is_reference,omitempty"`
	Speedup     float64  `json:"speedup,omitempty"`      // restic time / cairn time
	RSSRatio    float64  `json:"rss_ratio,omitempty"`    // cairn / restic peak RSS
	GrowthRatio float64  `json:"growth_ratio,omitempty"` // cairn / restic bytes added (backups)
	// PgDumpAlone is the time of pg_dump alone writing the same database
	// to /dev/null (cairn --pg live rows): cairn's time is checked against it.
	PgDumpAlone float64 `json:"pg_dump_alone_seconds,omitempty"`
	Note        string  `json:"note,omitempty"`
}

// Results is the JSON document.
type Results struct {
	Started       time.Time         `json:"started"`
	Finished      time.Time         `json:"finished"`
	Profile       profile           `json:"profile"`
	Host          map[string]string `json:"host"`
	CairnVersion  string            `json:"cairn_version"`
	ResticVersion string            `json:"restic_version"`
	Notes         []string          `json:"notes"`
	Datasets      map[string]any    `json:"datasets"`
	Rows          []*Row            `json:"rows"`
	IndexMemory   *IndexMemory      `json:"index_memory,omitempty"`
	Targets       []Target          `json:"targets"`
	Errors        []string          `json:"errors,omitempty"`
}

type bench struct {
	ctx  context.Context
	root string
	o    options
	prof profile
	work string
	// workWhy says where the work directory is and why (tmpfs or disk).
	workWhy string
	env     []string
	res     Results
	logMu   sync.Mutex
	// stdinKind is true when cairn backup has --no-delta (a comparison
	// row: database chunking without deltas).
	stdinKind bool
	cleanups  []func()
}

const password = "cairnbench password"

func newBench(ctx context.Context, root string, o options, prof profile) (*bench, error) {
	for _, p := range []struct{ name, path, fix string }{
		{"cairn", o.cairn, "run make build"},
		{"restic", o.restic, "run scripts/bench.sh, which installs restic v0.18.1"},
	} {
		if fi, err := os.Stat(p.path); err != nil || fi.IsDir() {
			return nil, fmt.Errorf("%s binary %s not found: %s", p.name, p.path, p.fix)
		}
	}
	parent, why := workParent(o.work, prof.WorkNeed)
	work, err := os.MkdirTemp(parent, "cairnbench-")
	if err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	b := &bench{ctx: ctx, root: root, o: o, prof: prof, work: work, workWhy: why}
	if err := b.makeWorkDirs(); err != nil {
		return nil, err
	}
	// Run a private copy of cairn: a `make build` elsewhere during the run
	// must not swap the binary between phases.
	if err := os.MkdirAll(filepath.Join(work, "bin"), 0o755); err != nil {
		return nil, err
	}
	cairnCopy := filepath.Join(work, "bin", "cairn")
	if err := copyFile(o.cairn, cairnCopy, 0o755); err != nil {
		return nil, fmt.Errorf("copy %s: %w", o.cairn, err)
	}
	b.o.cairn = cairnCopy
	for _, kv := range os.Environ() {
		// AWS_* would reach the s3 data set's tools (a session token or a
		// profile of the user's own account breaks MinIO's credentials).
		if strings.HasPrefix(kv, "CAIRN_") || strings.HasPrefix(kv, "RESTIC_") || strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "TMPDIR=") {
			continue
		}
		b.env = append(b.env, kv)
	}
	// Both tools write temporary files (restic's packs in progress) to the
	// same disk as the repositories.
	b.env = append(b.env, "TMPDIR="+filepath.Join(work, "tmp"), "CAIRN_PASSWORD="+password,
		"RESTIC_PASSWORD="+password, "RESTIC_CACHE_DIR="+filepath.Join(work, "restic-cache"))
	host, _ := os.Hostname()
	var uts syscall.Utsname
	_ = syscall.Uname(&uts)
	b.res = Results{
		Started: time.Now(), Profile: prof, Datasets: map[string]any{},
		Host: map[string]string{"hostname": host, "cpus": fmt.Sprint(runtime.NumCPU()), "kernel": utsString(uts.Release[:]),
			"go": runtime.Version(), "load_at_start": loadAvg(), "mem_total": memTotal()},
		Notes: []string{
			"Every phase runs cairn first, then restic, on the same input; the page cache is not dropped (it needs privileges), so both tools read warm inputs.",
			"Repositories, restore targets and the tools' temporary files are in " + work + " (" + why + "); both tools encrypt and use their default compression (restic: --compression auto, repository v2).",
			"Peak RSS is ru_maxrss of the tool's process (and its waited-for children, e.g. pg_dump for cairn --pg).",
			"The machine may be shared: timings of other workloads running at the same time are noise; compare ratios of one run.",
		},
	}
	if out, err := exec.Command(b.o.cairn, "--version").Output(); err == nil {
		b.res.CairnVersion = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command(o.restic, "version").Output(); err == nil {
		b.res.ResticVersion = strings.TrimSpace(string(out))
		if !strings.Contains(b.res.ResticVersion, "0.18.1") {
			b.res.Notes = append(b.res.Notes, "restic is not v0.18.1: "+b.res.ResticVersion)
		}
	}
	if out, err := exec.Command(b.o.cairn, "backup", "--help").Output(); err == nil && strings.Contains(string(out), "--no-delta") {
		b.stdinKind = true
	}
	return b, nil
}

func utsString(a []int8) string {
	var sb strings.Builder
	for _, c := range a {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "MemTotal:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "MemTotal:"))
		}
	}
	return "?"
}

func (b *bench) close() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	if b.o.keep {
		b.logf("kept %s", b.work)
		return
	}
	os.RemoveAll(b.work)
}

func (b *bench) logf(format string, args ...any) {
	b.logMu.Lock()
	defer b.logMu.Unlock()
	fmt.Printf("%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// repoT is one tool's repository.
type repoT struct {
	tool string // "cairn" or "restic"
	bin  string
	dir  string // the -r argument: a directory, or an s3: location
	// flags go after -r (restic's --cache-dir); env is added to the
	// bench's environment (S3 credentials, cairn's cache directory).
	flags []string
	env   []string
	// size returns the repository's bytes when it is not a local
	// directory (an S3 bucket).
	size func() int64
	// proxy, when set, counts the requests of each phase.
	proxy *latencyproxy.Proxy
}

// bytes is the repository's size.
func (r *repoT) bytes() int64 {
	if r.size != nil {
		return r.size()
	}
	return dirSize(r.dir)
}

// environ is the environment of the repository's commands.
func (b *bench) environ(r *repoT) []string {
	return append(b.env[:len(b.env):len(b.env)], r.env...)
}

// cmdArgs returns -r REPO, the repository's flags, then args.
func (r *repoT) cmdArgs(args ...string) []string {
	return append(append([]string{"-r", r.dir}, r.flags...), args...)
}

// newRepos creates a cairn and a restic repository for a data set.
func (b *bench) newRepos(name string) (c, r *repoT, err error) {
	if c, err = b.newRepo("cairn", name); err != nil {
		return nil, nil, err
	}
	if r, err = b.newRepo("restic", name); err != nil {
		return nil, nil, err
	}
	return c, r, nil
}

func (b *bench) newRepo(tool, name string) (*repoT, error) {
	r := &repoT{tool: tool, bin: b.o.cairn, dir: filepath.Join(b.work, "repos", name+"-"+tool)}
	if tool == "restic" {
		r.bin = b.o.restic
	}
	return r, b.initRepo(r)
}

// initRepo runs the tool's init.
func (b *bench) initRepo(r *repoT) error {
	cmd := exec.CommandContext(b.ctx, r.bin, r.cmdArgs("init")...)
	cmd.Env = b.environ(r)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s init %s: %v: %s", r.tool, r.dir, err, bytes.TrimSpace(out))
	}
	return nil
}

// inv is one invocation of a tool for a phase.
type inv struct {
	repo   *repoT
	args   []string // after -r REPO
	stdin  string   // file for standard input
	stdout string   // file for standard output ("" captures it)
	input  int64    // bytes backed up or restored, if known (0: from the summary)
	backup bool
	// check runs after the command (e.g. verifies a restore); its error fails
	// the phase.
	check func() error
}

// tail keeps the end of a command's stderr for error messages.
type tail struct{ buf []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > 8<<10 {
		t.buf = t.buf[len(t.buf)-8<<10:]
	}
	return len(p), nil
}

// execMeasured runs a program and returns its wall time and peak RSS.
func (b *bench) execMeasured(bin string, args, env []string, stdin, stdout string) (secs float64, rssKiB int64, out []byte, err error) {
	cmd := exec.CommandContext(b.ctx, bin, args...)
	cmd.Env = env
	if stdin != "" {
		f, err := os.Open(stdin)
		if err != nil {
			return 0, 0, nil, err
		}
		defer f.Close()
		cmd.Stdin = f
	}
	var outBuf bytes.Buffer
	if stdout != "" {
		f, err := os.OpenFile(stdout, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return 0, 0, nil, err
		}
		defer f.Close()
		cmd.Stdout = f
	} else {
		cmd.Stdout = &outBuf
	}
	errTail := &tail{}
	cmd.Stderr = errTail
	start := time.Now()
	err = cmd.Run()
	secs = time.Since(start).Seconds()
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			rssKiB = ru.Maxrss // KiB on Linux
		}
	}
	if err != nil {
		return secs, rssKiB, outBuf.Bytes(), fmt.Errorf("%s %s: %v: %s", filepath.Base(bin), strings.Join(args, " "), err, bytes.TrimSpace(errTail.buf))
	}
	return secs, rssKiB, outBuf.Bytes(), nil
}

// measure runs one invocation and prints its progress lines.
func (b *bench) measure(label, phase string, in inv) (*Measure, error) {
	if err := b.ctx.Err(); err != nil {
		return nil, err
	}
	var before int64
	if in.backup {
		before = in.repo.bytes()
	}
	args := in.repo.cmdArgs(in.args...)
	// Write back what earlier phases left dirty in the page cache before
	// the clock starts: otherwise a phase pays for its predecessor's
	// writes (a restore of 500 MB leaves that much), and whichever tool
	// runs second in a pair is timed against a different disk.
	syscall.Sync()
	b.logf("   %-8s %-28s %-6s ...", label, phase, in.repo.tool)
	if in.repo.proxy != nil {
		in.repo.proxy.Take() // what came before is not this phase's
	}
	secs, rss, out, err := b.execMeasured(in.repo.bin, args, b.environ(in.repo), in.stdin, in.stdout)
	var reqs *latencyproxy.Counts
	if in.repo.proxy != nil {
		c := in.repo.proxy.Take()
		reqs = &c
	}
	if err != nil {
		return nil, err
	}
	if in.check != nil {
		if err := in.check(); err != nil {
			return nil, fmt.Errorf("%s %s: %w", in.repo.tool, phase, err)
		}
	}
	m := &Measure{Seconds: secs, MaxRSSKiB: rss, RepoBytes: in.repo.bytes(), InputBytes: in.input, Requests: reqs,
		Command: commandLine(in.repo.tool, append(in.repo.flags[:len(in.repo.flags):len(in.repo.flags)], in.args...), in.stdin, in.stdout)}
	if in.backup {
		m.GrowthBytes = m.RepoBytes - before
		if s := backupSummary(out); s != nil {
			m.DataAdded, m.DataAddedPacked, m.SnapshotID = s.DataAdded, s.DataAddedPacked, s.SnapshotID
			if m.InputBytes == 0 {
				m.InputBytes = s.TotalBytesProcessed
			}
		}
	}
	if m.InputBytes > 0 && secs > 0 {
		m.MBps = float64(m.InputBytes) / 1e6 / secs
	}
	extra := ""
	if in.backup {
		extra = fmt.Sprintf(" (+%s)", fmtBytes(m.GrowthBytes))
	}
	rate := ""
	if m.MBps > 0 {
		rate = fmt.Sprintf("  %.1f MB/s", m.MBps)
	}
	if reqs != nil {
		rate += fmt.Sprintf("  requests %d (%s)", reqs.Total(), reqs)
	}
	b.logf("   %-8s %-28s %-6s %7.2fs  RSS %s  repo %s%s%s", label, phase, in.repo.tool, secs, fmtRSS(rss), fmtBytes(m.RepoBytes), extra, rate)
	return m, nil
}

func commandLine(tool string, args []string, stdin, stdout string) string {
	shown := make([]string, len(args))
	for i, a := range args {
		shown[i] = a
		if u, err := url.Parse(a); err == nil && u.User != nil {
			if _, ok := u.User.Password(); ok {
				u.User = url.UserPassword(u.User.Username(), "xxx")
				shown[i] = u.String()
			}
		}
	}
	s := tool + " -r REPO " + strings.Join(shown, " ")
	if stdin != "" {
		s += " < " + filepath.Base(stdin)
	}
	if stdout != "" {
		s += " > " + stdout
	}
	return s
}

type summary struct {
	MessageType         string `json:"message_type"`
	DataAdded           int64  `json:"data_added"`
	DataAddedPacked     int64  `json:"data_added_packed"`
	TotalBytesProcessed int64  `json:"total_bytes_processed"`
	SnapshotID          string `json:"snapshot_id"`
}

// backupSummary finds the summary object in a backup's --json output (one
// object from cairn, a stream of status lines and a summary from restic).
func backupSummary(out []byte) *summary {
	dec := json.NewDecoder(bytes.NewReader(out))
	var last *summary
	for {
		var s summary
		if err := dec.Decode(&s); err != nil {
			if errors.Is(err, io.EOF) {
				return last
			}
			// Skip a line that is not JSON.
			rest, _ := io.ReadAll(dec.Buffered())
			i := bytes.IndexByte(rest, '\n')
			if i < 0 {
				return last
			}
			dec = json.NewDecoder(bytes.NewReader(rest[i+1:]))
			continue
		}
		if s.MessageType == "summary" {
			last = &s
		}
	}
}

// pair runs a phase with cairn, then restic, and records the row.
func (b *bench) pair(ds, phase string, c, r inv) (*Row, error) {
	return b.pairRepeated(ds, phase, c, r, 1)
}

// pairRepeated measures a phase that leaves no state behind (a restore) n
// times for each tool, alternating cairn and restic, and records each
// tool's median run: on a shared machine one run of a few seconds varies
// by 15% either way, more than the targets' margins.
func (b *bench) pairRepeated(ds, phase string, c, r inv, n int) (*Row, error) {
	var cs, rs []*Measure
	for range n {
		cm, err := b.measure(ds, phase, c)
		if err != nil {
			return nil, err
		}
		rm, err := b.measure(ds, phase, r)
		if err != nil {
			return nil, err
		}
		cs, rs = append(cs, cm), append(rs, rm)
	}
	row := &Row{Dataset: ds, Phase: phase, Backup: c.backup, Cairn: medianRun(cs), Restic: medianRun(rs)}
	row.ratios()
	b.res.Rows = append(b.res.Rows, row)
	if n == 1 {
		return row, nil
	}
	b.logf("   %-8s %-28s median of %d runs: cairn %.2fs %v, restic %.2fs %v", ds, phase, n, row.Cairn.Seconds, row.Cairn.Runs, row.Restic.Seconds, row.Restic.Runs)
	return row, nil
}

// medianRun returns the run of median time, with every run's time in Runs
// when there are several.
func medianRun(ms []*Measure) *Measure {
	if len(ms) == 1 {
		return ms[0]
	}
	sorted := slices.Clone(ms)
	slices.SortFunc(sorted, func(a, b *Measure) int { return cmp.Compare(a.Seconds, b.Seconds) })
	m := *sorted[len(sorted)/2]
	for _, x := range ms {
		m.Runs = append(m.Runs, math.Round(x.Seconds*100)/100)
	}
	return &m
}

// single runs a cairn variant of a phase and records it next to restic's
// figures of the reference row.
func (b *bench) single(ds, variant, phase string, c inv, ref *Row, note string) (*Row, error) {
	cm, err := b.measure(ds+"*", phase, c)
	if err != nil {
		return nil, err
	}
	row := &Row{Dataset: ds, Variant: variant, Phase: phase, Backup: c.backup, Cairn: cm, Note: note}
	if ref != nil {
		row.Restic, row.ResticRef = ref.Restic, true
	}
	row.ratios()
	b.res.Rows = append(b.res.Rows, row)
	return row, nil
}

func (r *Row) ratios() {
	if r.Cairn == nil || r.Restic == nil {
		return
	}
	if r.Cairn.Seconds > 0 {
		r.Speedup = r.Restic.Seconds / r.Cairn.Seconds
	}
	if r.Restic.MaxRSSKiB > 0 {
		r.RSSRatio = float64(r.Cairn.MaxRSSKiB) / float64(r.Restic.MaxRSSKiB)
	}
	if r.Backup && r.Restic.GrowthBytes > 0 {
		r.GrowthRatio = float64(r.Cairn.GrowthBytes) / float64(r.Restic.GrowthBytes)
	}
}

// dirSize is the sum of the sizes of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// treeStats counts the regular files under dir and their bytes.
func treeStats(dir string) (files int, bytes int64, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			files++
			bytes += fi.Size()
		}
		return nil
	})
	return files, bytes, err
}

// sameFile compares two files byte for byte.
func sameFile(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	var off int64
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return fmt.Errorf("restored %s differs from %s near byte %d", b, a, off)
		}
		off += int64(na)
		if ea != nil || eb != nil {
			if (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF) {
				return nil
			}
			return errors.Join(ea, eb)
		}
	}
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func fmtBytes(n int64) string {
	switch {
	case n < 0:
		return "-" + fmtBytes(-n)
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

func fmtRSS(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }

// warm reads files so that both tools find them in the page cache.
func warm(paths ...string) {
	buf := make([]byte, 1<<20)
	for _, p := range paths {
		_ = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			if f, err := os.Open(q); err == nil {
				_, _ = io.CopyBuffer(io.Discard, f, buf)
				f.Close()
			}
			return nil
		})
	}
}

// startupDataset names the row of the fixed cost of every command.
const startupDataset = "startup"

// runStartup measures what every command pays before it does any work:
// starting, opening the repository and deriving the key from the password
// (cairn: argon2id; restic: scrypt calibrated at init), with `snapshots`
// on an empty repository. Not a target; it explains short phases.
func (b *bench) runStartup() error {
	c, r, err := b.newRepos("startup")
	if err != nil {
		return err
	}
	row, err := b.pair(startupDataset, "snapshots (empty repo)", inv{repo: c, args: []string{"snapshots"}}, inv{repo: r, args: []string{"snapshots"}})
	if err != nil {
		return err
	}
	row.Note = "the fixed cost of every command (start, open the repository, derive the key from the password); not a target"
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
