package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// IndexMemory is what BenchmarkIndexMemory reports for an index of one
// million blobs.
type IndexMemory struct {
	HeapBytesPerBlob float64 `json:"heap_bytes_per_blob"`
	EstBytesPerBlob  float64 `json:"est_bytes_per_blob"`
	Output           string  `json:"output"`
}

// indexMemory runs the index package's memory benchmark.
func indexMemory(ctx context.Context, root string) (*IndexMemory, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "BenchmarkIndexMemory", "-benchtime", "1x", "./index")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -bench BenchmarkIndexMemory ./index: %v: %s", err, bytes.TrimSpace(out))
	}
	im := &IndexMemory{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "BenchmarkIndexMemory") {
			continue
		}
		im.Output = strings.Join(strings.Fields(line), " ")
		f := strings.Fields(line)
		for i := 1; i < len(f); i++ {
			v, err := strconv.ParseFloat(f[i-1], 64)
			if err != nil {
				continue
			}
			switch f[i] {
			case "heap-B/blob":
				im.HeapBytesPerBlob = v
			case "est-B/blob":
				im.EstBytesPerBlob = v
			}
		}
	}
	if im.Output == "" {
		return nil, fmt.Errorf("no BenchmarkIndexMemory line in: %s", bytes.TrimSpace(out))
	}
	return im, nil
}

// Target is one of the performance targets of issues 9 and 14, checked on
// one row.
type Target struct {
	Target string  `json:"target"`
	Row    string  `json:"row"`
	Value  float64 `json:"value"`
	Want   string  `json:"want"`
	Met    bool    `json:"met"`
}

func rowName(r *Row) string {
	ds := r.Dataset
	if r.Variant != "" {
		ds += " [" + r.Variant + "]"
	}
	return ds + ": " + r.Phase
}

// finish evaluates the targets.
func (b *bench) finish() {
	b.res.Finished = time.Now()
	b.res.Host["load_at_end"] = loadAvg()
	var ts []Target
	add := func(target string, r *Row, v float64, want string, met bool) {
		ts = append(ts, Target{Target: target, Row: rowName(r), Value: round3(v), Want: want, Met: met})
	}
	for _, r := range b.res.Rows {
		if r.Cairn == nil || r.Restic == nil || r.Dataset == startupDataset {
			continue
		}
		switch r.Dataset {
		case s3Dataset:
			s3Targets(r, add) // its own targets, in time ratios
			rssTargets(s3Dataset, r, add)
			continue
		case nightsDataset:
			nightsRowTargets(r, add)
			continue
		case realtreeDataset:
			realtreeTargets(r, add)
			continue
		case pitrDataset:
			continue // sizes and archive throughput, reported as they are
		}
		if r.PgDumpAlone > 0 {
			v := r.Cairn.Seconds / r.PgDumpAlone
			add("cairn --pg live time <= 1.25x pg_dump alone to /dev/null", r, v, "<= 1.25", v <= 1.25)
		}
		if r.Dataset == "pg" && r.Backup && strings.Contains(r.Phase, "day 2") && r.GrowthRatio > 0 {
			name := "day-2 database growth <= 0.5x restic"
			if r.Variant != "" {
				name += " (variant)"
			}
			add(name, r, r.GrowthRatio, "<= 0.5", r.GrowthRatio <= 0.5)
		}
		if r.Variant != "" {
			continue // another way to run cairn: informational
		}
		// Issue 14: every backup and restore phase 1.5x faster than
		// restic, within 1.5x its peak RSS and 400 MB.
		kind := "restore"
		if r.Backup {
			kind = "backup"
		}
		add(kind+" >= 1.5x restic", r, r.Speedup, ">= 1.5", r.Speedup >= 1.5)
		if r.Dataset == "files" && r.Phase == phaseUnchanged {
			add("unchanged second backup >= 2x restic", r, r.Speedup, ">= 2", r.Speedup >= 2)
		}
		rssTargets(r.Dataset, r, add)
	}
	nightsSeriesTargets(b.res.Rows, add)
	if im := b.res.IndexMemory; im != nil {
		ts = append(ts, Target{Target: "index <= 40 B/blob", Row: "index: BenchmarkIndexMemory heap-B/blob", Value: im.HeapBytesPerBlob, Want: "<= 40", Met: im.HeapBytesPerBlob <= 40})
	}
	b.res.Targets = ts
}

// s3Targets checks the targets of the s3 rows: cairn's time as a fraction
// of restic's, and the request count of the unchanged re-backup, which a
// remote bucket's latency turns into time.
func s3Targets(r *Row, add addFunc) {
	if r.Speedup > 0 {
		t := 1 / r.Speedup // cairn time / restic time
		switch r.Phase {
		case s3TreeFirst:
			add("s3: first tree backup time <= 1.0x restic's", r, t, "<= 1.0", t <= 1)
		case s3TreeUnchanged, s3TreeDay2:
			add("s3: unchanged and 1%-changed tree backup time <= 0.5x restic's", r, t, "<= 0.5", t <= 0.5)
		case s3TreeRestore, s3PGRestore:
			add("s3: restore time <= 0.5x restic's", r, t, "<= 0.5", t <= 0.5)
		}
	}
	if r.Phase == s3TreeUnchanged && r.Cairn.Requests != nil && r.Restic.Requests != nil && r.Restic.Requests.Total() > 0 {
		v := float64(r.Cairn.Requests.Total()) / float64(r.Restic.Requests.Total())
		add("s3: unchanged re-backup requests <= 2x restic's", r, v, "<= 2", v <= 2)
	}
}

// addFunc records a target checked on a row.
type addFunc func(target string, r *Row, v float64, want string, met bool)

// Memory bounds of the pgnights and realtree rows (issue 14).
const (
	rssRatioMax = 1.5 // cairn's peak RSS / restic's
	rssMaxMB    = 400 // cairn's peak RSS, 10^6 bytes
)

// rssTargets checks cairn's peak RSS against restic's and the bound.
func rssTargets(ds string, r *Row, add addFunc) {
	add(ds+": peak RSS <= 1.5x restic's", r, r.RSSRatio, "<= 1.5", r.RSSRatio <= rssRatioMax)
	mb := float64(r.Cairn.MaxRSSKiB) * 1024 / 1e6
	add(ds+": peak RSS <= 400 MB", r, mb, "<= 400", mb <= rssMaxMB)
}

// nightsRowTargets checks one pgnights row: every night's backup and
// both restores 1.5x faster than restic, and the memory bounds.
func nightsRowTargets(r *Row, add addFunc) {
	switch {
	case r.Phase == nightsCopyPhase:
		// Issue 18 asks for the figures, not a ratio: the row shows them.
		return
	case r.Backup:
		add("pgnights: every night's backup >= 1.5x restic", r, r.Speedup, ">= 1.5", r.Speedup >= 1.5)
	default:
		add("pgnights: restore >= 1.5x restic", r, r.Speedup, ">= 1.5", r.Speedup >= 1.5)
	}
	rssTargets(nightsDataset, r, add)
}

// nightsSeriesTargets checks what the series as a whole must show: the
// last night's backup no slower than night 2's (within 10%), and the
// repository after the last night at most 0.35x restic's.
func nightsSeriesTargets(rows []*Row, add addFunc) {
	var night2, last *Row
	for _, r := range rows {
		if r.Dataset != nightsDataset || !r.Backup || r.Cairn == nil || r.Restic == nil {
			continue
		}
		if r.Phase == nightBackupPhase(2) {
			night2 = r
		}
		last = r // the nights run in order
	}
	if last == nil {
		return
	}
	if night2 != nil && last != night2 && night2.Cairn.Seconds > 0 {
		v := last.Cairn.Seconds / night2.Cairn.Seconds
		add("pgnights: last night's backup time <= 1.1x night 2's (cairn)", last, v, "<= 1.1", v <= 1.1)
	}
	if last.Restic.RepoBytes > 0 {
		v := float64(last.Cairn.RepoBytes) / float64(last.Restic.RepoBytes)
		add("pgnights: repository after the last night <= 0.35x restic's", last, v, "<= 0.35", v <= 0.35)
	}
}

// realtreeTargets checks one realtree row: every backup and the restore
// 1.5x faster than restic, and the memory bounds.
func realtreeTargets(r *Row, add addFunc) {
	add("realtree: every backup and restore >= 1.5x restic", r, r.Speedup, ">= 1.5", r.Speedup >= 1.5)
	rssTargets(realtreeDataset, r, add)
}

func round3(v float64) float64 {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'f', 3, 64), 64)
	return r
}

func ratio(v float64, format string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func secsCell(m *Measure) string {
	if m == nil {
		return "-"
	}
	return fmt.Sprintf("%.2fs", m.Seconds)
}

func rateCell(m *Measure) string {
	if m == nil || m.MBps == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", m.MBps)
}

func rssCell(m *Measure) string {
	if m == nil {
		return "-"
	}
	return fmtRSS(m.MaxRSSKiB)
}

// requestsCell is the S3 requests of a phase, e.g. "14 (GET 8, LIST 4, PUT 2)".
func requestsCell(m *Measure) string {
	if m == nil || m.Requests == nil {
		return "-"
	}
	return fmt.Sprintf("%d (%s)", m.Requests.Total(), m.Requests)
}

func repoCell(m *Measure, backup bool) string {
	if m == nil {
		return "-"
	}
	if backup {
		return fmt.Sprintf("%s (+%s)", fmtBytes(m.RepoBytes), fmtBytes(m.GrowthBytes))
	}
	return fmtBytes(m.RepoBytes)
}

// printTable prints the rows, the dataset facts and the targets.
func (b *bench) printTable(w io.Writer) {
	fmt.Fprintf(w, "cairn vs restic: profile %s, %s CPUs, load %s at start and %s at end; %s; %s\n",
		b.res.Profile.Name, b.res.Host["cpus"], b.res.Host["load_at_start"], b.res.Host["load_at_end"], b.res.CairnVersion, b.res.ResticVersion)
	// The request columns only when a data set counted requests (s3).
	withRequests := false
	for _, r := range b.res.Rows {
		withRequests = withRequests || (r.Cairn != nil && r.Cairn.Requests != nil)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	header := "dataset\tphase\tinput\tcairn\trestic\tspeedup\tcairn MB/s\trestic MB/s\tcairn RSS\trestic RSS\tRSS ratio\tcairn repo (+added)\trestic repo (+added)\tgrowth ratio\t"
	if withRequests {
		header += "cairn requests\trestic requests\t"
	}
	fmt.Fprintln(tw, header)
	for _, r := range b.res.Rows {
		ds := r.Dataset
		if r.Variant != "" {
			ds += " [" + r.Variant + "]"
		}
		input := "-"
		if r.Cairn != nil && r.Cairn.InputBytes > 0 {
			input = fmtBytes(r.Cairn.InputBytes)
		}
		resticTime := secsCell(r.Restic)
		if r.ResticRef {
			resticTime = "(" + resticTime + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t", ds, r.Phase, input,
			secsCell(r.Cairn), resticTime, ratio(r.Speedup, "%.2fx"), rateCell(r.Cairn), rateCell(r.Restic),
			rssCell(r.Cairn), rssCell(r.Restic), ratio(r.RSSRatio, "%.2f"),
			repoCell(r.Cairn, r.Backup), repoCell(r.Restic, r.Backup), ratio(r.GrowthRatio, "%.2f"))
		if withRequests {
			fmt.Fprintf(tw, "%s\t%s\t", requestsCell(r.Cairn), requestsCell(r.Restic))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	fmt.Fprintln(w, "speedup = restic time / cairn time; RSS ratio and growth ratio = cairn / restic; MB = 10^6 bytes.")
	fmt.Fprintln(w, "Rows in [brackets] run cairn another way; their restic figures (in parentheses) repeat the main row's.")
	if withRequests {
		fmt.Fprintf(w, "s3 rows: requests through the latency proxy (%s each): GET object reads, LIST bucket listings, other e.g. GET ?location.\n", b.o.s3Delay)
	}
	for _, r := range b.res.Rows {
		if r.Note != "" {
			fmt.Fprintf(w, "note: %s: %s\n", rowName(r), r.Note)
		}
	}
	if im := b.res.IndexMemory; im != nil {
		fmt.Fprintf(w, "index memory: %.1f B/blob heap, %.1f B/blob estimated (BenchmarkIndexMemory, 1M blobs)\n", im.HeapBytesPerBlob, im.EstBytesPerBlob)
	}
	if len(b.res.Targets) > 0 {
		fmt.Fprintln(w, "\ntargets (issues 9 and 14):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, t := range b.res.Targets {
			met := "MET"
			if !t.Met {
				met = "not met"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%.2f\t(want %s)\t%s\n", t.Target, t.Row, t.Value, t.Want, met)
		}
		tw.Flush()
	}
	for _, e := range b.res.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
}

func (b *bench) writeJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(b.res, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(js, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
