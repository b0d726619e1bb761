package main

// forget: remove snapshots by ID or by a retention policy (package
// retention), and the --at helpers of 'snapshots' and 'restore'.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/internal/profile"
	"github.com/cairn-backup/cairn/internal/retention"
	"github.com/cairn-backup/cairn/internal/walarchive"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// countFlag is a --keep-* count: a number of periods, or -1 / "unlimited".
type countFlag struct{ n *int }

func (c countFlag) String() string {
	switch {
	case c.n == nil:
		return "0"
	case *c.n == retention.Unlimited:
		return "unlimited"
	}
	return strconv.Itoa(*c.n)
}

func (c countFlag) Set(s string) error {
	if s == "unlimited" {
		*c.n = retention.Unlimited
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < retention.Unlimited {
		return fmt.Errorf("want a count of 0 or more, or -1 or 'unlimited' for all")
	}
	*c.n = n
	return nil
}

func (c countFlag) Type() string { return "n" }

type forgetOptions struct {
	policy  retention.Policy
	within  string
	hosts   []string
	tags    []string
	groupBy string
	dryRun  bool
	prune   bool
	config  string
	// groupByChanged: --group-by was given (a profile groups by host).
	groupByChanged bool
	// profile is the loaded --config profile.
	profile *profile.Profile
}

func (a *app) forgetCommand() *cobra.Command {
	var o forgetOptions
	cmd := &cobra.Command{
		Use:   "forget [flags] [SNAPSHOT...]",
		Short: "Remove snapshots by ID or by a retention policy (--keep-*)",
		Long: `Remove snapshots: the ones named (ID, unique prefix or 'latest'), or those a
retention policy does not keep. As restic's forget: snapshots are grouped by
--group-by (host and paths by default) and the policy applies to each group,
newest first. --keep-hourly/daily/weekly/monthly/yearly n keep the newest
snapshot of each of the last n hours/days/ISO weeks/months/years that have a
snapshot (local time); if a rule has periods left at the oldest snapshot of a
group, that one is kept too; n = -1 or 'unlimited' keeps the newest of every
period. --keep-within keeps everything taken within the
duration before the newest snapshot of the group (not before now). A snapshot
kept by any rule is kept. Without a policy nothing is removed.

forget removes only snapshot objects; 'cairn prune' (or --prune) then deletes
the data no snapshot uses any more.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.groupByChanged = cmd.Flags().Changed("group-by")
			return a.runForget(cmd.Context(), o, args)
		},
	}
	fl := cmd.Flags()
	p := &o.policy
	fl.Var(countFlag{&p.Last}, "keep-last", "keep the `n` newest snapshots (-1 or 'unlimited': all)")
	fl.Var(countFlag{&p.Hourly}, "keep-hourly", "keep the newest snapshot of each of the last `n` hours that have one")
	fl.Var(countFlag{&p.Daily}, "keep-daily", "keep the newest snapshot of each of the last `n` days that have one")
	fl.Var(countFlag{&p.Weekly}, "keep-weekly", "keep the newest snapshot of each of the last `n` ISO weeks (Monday to Sunday) that have one")
	fl.Var(countFlag{&p.Monthly}, "keep-monthly", "keep the newest snapshot of each of the last `n` months that have one")
	fl.Var(countFlag{&p.Yearly}, "keep-yearly", "keep the newest snapshot of each of the last `n` years that have one")
	fl.StringVar(&o.within, "keep-within", "", "keep snapshots taken within `duration` before the newest of their group: 2y5m7d3h (m = months) or a Go duration such as 36h")
	fl.StringArrayVar(&p.Tags, "keep-tag", nil, "keep snapshots having all of these comma-separated `tags` (repeatable: any one set; '' = untagged)")
	fl.StringArrayVar(&o.hosts, "host", nil, "only consider snapshots of `host` (repeatable)")
	fl.StringArrayVar(&o.tags, "tag", nil, "only consider snapshots having all of these comma-separated `tags` (repeatable: any one set)")
	fl.StringVarP(&o.groupBy, "group-by", "g", "host,paths", "apply the policy per group of snapshots with equal `fields` (host, paths, tags; '' for one group)")
	fl.BoolVarP(&o.dryRun, "dry-run", "n", false, "only show what would be kept and removed, and why")
	fl.BoolVar(&o.prune, "prune", false, "run 'cairn prune' afterwards if snapshots were removed")
	fl.StringVar(&o.config, "config", "", "apply the retention policy of the deployment profile `file` to its snapshots (--keep-* flags override it)")
	return cmd
}

// forgetGroupJSON is one group of 'forget --json', with restic's fields.
type forgetGroupJSON struct {
	Host    string           `json:"host"`
	Paths   []string         `json:"paths"`
	Tags    []string         `json:"tags"`
	Keep    []snapshotJSON   `json:"keep"`
	Remove  []snapshotJSON   `json:"remove"`
	Reasons []keepReasonJSON `json:"reasons"`
}

type keepReasonJSON struct {
	Snapshot snapshotJSON `json:"snapshot"`
	Matches  []string     `json:"matches"`
}

func toSnapshotJSON(sn *repo.Snapshot) snapshotJSON {
	j := snapshotJSON{ID: sn.ID.String(), ShortID: sn.ID.Short(), Time: sn.Time, Hostname: sn.Hostname,
		Username: sn.Username, Tags: sn.Tags, Paths: sn.Paths, Tree: sn.Tree.String(),
		ProgramVersion: sn.ProgramVersion, Summary: sn.Summary, Sources: sn.Sources}
	if sn.Parent != nil {
		j.Parent = sn.Parent.String()
	}
	if sn.Original != nil {
		j.Original = sn.Original.String()
	}
	if sn.CopiedFrom != nil {
		j.CopiedFrom = sn.CopiedFrom.String()
	}
	if j.Tags == nil {
		j.Tags = []string{}
	}
	return j
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// matchFilter reports whether sn passes forget's --host and --tag filters.
func (o *forgetOptions) matchFilter(sn *repo.Snapshot) bool {
	return (len(o.hosts) == 0 || slices.Contains(o.hosts, sn.Hostname)) && retention.MatchTags(sn.Tags, o.tags)
}

func (a *app) runForget(ctx context.Context, o forgetOptions, args []string) error {
	if o.config != "" {
		if err := a.applyForgetProfile(&o, len(args) > 0); err != nil {
			return err
		}
	}
	p := o.policy
	if o.within != "" {
		m, d, err := retention.ParseWithin(o.within)
		if err != nil {
			return fmt.Errorf("--keep-within: %w", err)
		}
		p.WithinMonths, p.Within = m, d
	}
	if err := p.Validate(); err != nil {
		return err
	}
	by, err := retention.ParseGroupBy(o.groupBy)
	if err != nil {
		return fmt.Errorf("--group-by: %w", err)
	}
	switch {
	case len(args) > 0 && !p.Empty():
		return errors.New("give snapshot IDs or a --keep-* policy, not both")
	case len(args) == 0 && p.Empty():
		fmt.Fprintln(a.stderr, "no policy was specified, no snapshots will be removed (give --keep-* options or snapshot IDs)")
		return nil
	}
	r, err := a.openRepo(ctx, false, backend.Snapshot)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := a.forgetIn(ctx, r, o, p, by, args); err != nil {
		return err
	}
	if o.profile == nil || len(args) > 0 {
		return nil
	}
	// Each offsite repository of the profile with its own policy.
	for _, off := range o.profile.Offsite {
		op, err := policyOf(off.Retention)
		if err != nil {
			return fmt.Errorf("offsite %s: %w", off.Name, err)
		}
		if op.Empty() {
			a.forgetTextf("offsite %s: no [offsite.retention] policy, nothing removed\n", off.Name)
			continue
		}
		a.forgetTextf("offsite %s:\n", off.Name)
		err = func() error {
			dst, err := a.openOffsite(ctx, off)
			if err != nil {
				return err
			}
			defer dst.Close()
			return a.forgetIn(ctx, dst, o, op, by, nil)
		}()
		if err != nil {
			return fmt.Errorf("offsite %s: %w", off.Name, err)
		}
	}
	return nil
}

// policyOf is a profile's retention as a policy.
func policyOf(rt profile.Retention) (retention.Policy, error) {
	p := retention.Policy{Last: rt.KeepLast, Hourly: rt.KeepHourly, Daily: rt.KeepDaily, Weekly: rt.KeepWeekly,
		Monthly: rt.KeepMonthly, Yearly: rt.KeepYearly, Tags: rt.KeepTags}
	if rt.KeepWithin != "" {
		m, d, err := retention.ParseWithin(rt.KeepWithin)
		if err != nil {
			return p, fmt.Errorf("keep_within: %w", err)
		}
		p.WithinMonths, p.Within = m, d
	}
	return p, p.Validate()
}

// forgetIn applies policy p (or removes the snapshots args names) in r.
func (a *app) forgetIn(ctx context.Context, r *repo.Repository, o forgetOptions, p retention.Policy, by retention.GroupBy, args []string) error {
	var groups []retention.Group
	if len(args) > 0 {
		g, err := o.namedSnapshots(ctx, r, args)
		if err != nil {
			return err
		}
		groups = []retention.Group{g}
	} else {
		sns, err := r.ListSnapshots(ctx)
		if err != nil {
			return fmt.Errorf("%w; refusing to apply a policy while snapshots cannot be read (repair them with 'cairn repair snapshots' or remove them with 'cairn forget ID')", err)
		}
		var considered []*repo.Snapshot
		for _, sn := range sns {
			if o.matchFilter(sn) {
				considered = append(considered, sn)
			}
		}
		p.Now = time.Now()
		groups = retention.Apply(considered, p, by, time.Local)
		for _, g := range groups {
			if len(g.Keep) == 0 && len(g.Remove) > 0 {
				return fmt.Errorf("refusing to remove every snapshot of the group %s: the policy (%s) keeps none of its %d snapshots", g.Key, p, len(g.Remove))
			}
		}
		a.forgetTextf("applying policy: %s\n", p)
	}

	if a.jsonOutput {
		if err := a.printForgetJSON(groups); err != nil {
			return err
		}
	} else if !a.quiet {
		a.printForgetTables(groups, len(args) == 0)
	}

	var remove []*repo.Snapshot
	for _, g := range groups {
		remove = append(remove, g.Remove...)
	}
	if o.dryRun {
		a.forgetTextf("would remove %d snapshots (dry run)\n", len(remove))
		if o.prune && len(remove) > 0 {
			a.forgetTextf("would run prune afterwards\n")
		}
		return nil
	}
	var removed []crypto.ID
	defer func() { a.forgetSeen(removed, nil) }() // removed here: no surprise next time
	for i, sn := range remove {
		if err := r.Remove(ctx, backend.Handle{Type: backend.Snapshot, Name: sn.ID.String()}); err != nil && !backend.IsNotFound(err) {
			return fmt.Errorf("removed %d of %d snapshots; remove snapshot %s: %w", i, len(remove), sn.ID.Short(), err)
		}
		removed = append(removed, sn.ID)
	}
	a.forgetTextf("removed %d snapshots\n", len(remove))
	if len(remove) > 0 {
		if err := a.forgetWAL(ctx, r); err != nil {
			return err
		}
	}
	if o.prune && len(remove) > 0 {
		a.forgetTextf("running prune\n")
		return a.pruneAfterForget(ctx, r)
	}
	return nil
}

// forgetTextf prints a line of text output (none with --json or --quiet).
func (a *app) forgetTextf(format string, args ...any) {
	if !a.jsonOutput {
		a.printf(format, args...)
	}
}

// namedSnapshots resolves forget's arguments (full IDs, unique prefixes or
// 'latest') into one group to remove. IDs are matched against the stored
// snapshot names, so a snapshot that cannot be read can still be removed,
// unless --host or --tag filters are given: then it must match them.
func (o *forgetOptions) namedSnapshots(ctx context.Context, r *repo.Repository, args []string) (retention.Group, error) {
	var names []string
	if err := r.Backend().List(ctx, backend.Snapshot, func(fi backend.FileInfo) error {
		if _, err := crypto.ParseID(fi.Name); err == nil {
			names = append(names, fi.Name)
		}
		return nil
	}); err != nil {
		return retention.Group{}, fmt.Errorf("list snapshots: %w", err)
	}
	var g retention.Group
	seen := map[string]bool{}
	for _, ref := range args {
		var sn *repo.Snapshot
		if ref == "latest" {
			sns, listErr := r.ListSnapshots(ctx)
			for i := len(sns) - 1; i >= 0 && sn == nil; i-- {
				if o.matchFilter(sns[i]) {
					sn = sns[i]
				}
			}
			if sn == nil {
				if listErr != nil {
					return g, listErr
				}
				return g, errors.New("no snapshot matches 'latest'")
			}
		} else {
			var match []string
			for _, n := range names {
				if ref != "" && strings.HasPrefix(n, strings.ToLower(ref)) {
					match = append(match, n)
				}
			}
			switch {
			case len(match) == 0:
				return g, fmt.Errorf("no snapshot matches %q", ref)
			case len(match) > 1:
				return g, fmt.Errorf("snapshot prefix %q is ambiguous (%d snapshots)", ref, len(match))
			}
			id, _ := crypto.ParseID(match[0])
			loaded, err := r.LoadSnapshot(ctx, id)
			switch {
			case err == nil:
				sn = loaded
			case len(o.hosts) > 0 || len(o.tags) > 0:
				return g, fmt.Errorf("%w; cannot check it against --host/--tag", err)
			default:
				sn = &repo.Snapshot{ID: id} // unreadable: remove it anyway
			}
			if err == nil && !o.matchFilter(sn) {
				return g, fmt.Errorf("snapshot %s does not match --host/--tag", id.Short())
			}
		}
		if !seen[sn.ID.String()] {
			seen[sn.ID.String()] = true
			g.Remove = append(g.Remove, sn)
		}
	}
	return g, nil
}

func (a *app) printForgetJSON(groups []retention.Group) error {
	out := []forgetGroupJSON{}
	for _, g := range groups {
		j := forgetGroupJSON{Host: g.Key.Host, Paths: nonNil(g.Key.Paths), Tags: nonNil(g.Key.Tags),
			Keep: []snapshotJSON{}, Remove: []snapshotJSON{}, Reasons: []keepReasonJSON{}}
		for _, d := range g.Keep {
			sj := toSnapshotJSON(d.Snapshot)
			j.Keep = append(j.Keep, sj)
			j.Reasons = append(j.Reasons, keepReasonJSON{Snapshot: sj, Matches: d.Reasons})
		}
		for _, sn := range g.Remove {
			j.Remove = append(j.Remove, toSnapshotJSON(sn))
		}
		out = append(out, j)
	}
	return a.printJSON(out)
}

// printForgetTables prints, per group, the kept snapshots with their
// reasons and the removed ones, like restic.
func (a *app) printForgetTables(groups []retention.Group, withPolicy bool) {
	const timeFmt = "2006-01-02 15:04:05"
	row := func(sn *repo.Snapshot) []string {
		if sn.Time.IsZero() {
			return []string{sn.ID.Short(), "(unreadable)", "", ""}
		}
		return []string{sn.ID.Short(), sn.Time.Local().Format(timeFmt), sn.Hostname, strings.Join(sn.Tags, ",")}
	}
	table := func(title string, head []string, rows [][]string) {
		var buf bytes.Buffer
		tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(head, "\t"))
		for _, r := range rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		_ = tw.Flush()
		lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
		width := 0
		for i, l := range lines {
			lines[i] = strings.TrimRight(l, " ")
			width = max(width, len(lines[i]))
		}
		rule := strings.Repeat("-", width)
		fmt.Fprintf(a.stdout, "%s:\n%s\n%s\n%s\n%s\n\n", title, lines[0], rule, strings.Join(lines[1:], "\n"), rule)
	}
	for _, g := range groups {
		if withPolicy {
			fmt.Fprintf(a.stdout, "snapshots for %s:\n\n", g.Key)
		}
		if len(g.Keep) > 0 {
			var rows [][]string
			for _, d := range g.Keep {
				rows = append(rows, append(row(d.Snapshot), d.Reasons[0], strings.Join(d.Snapshot.Paths, ", ")))
				for _, more := range d.Reasons[1:] {
					rows = append(rows, []string{"", "", "", "", more, ""})
				}
			}
			table(fmt.Sprintf("keep %d snapshots", len(g.Keep)), []string{"ID", "Time", "Host", "Tags", "Reasons", "Paths"}, rows)
		}
		if len(g.Remove) > 0 {
			var rows [][]string
			for _, sn := range g.Remove {
				rows = append(rows, append(row(sn), strings.Join(sn.Paths, ", ")))
			}
			table(fmt.Sprintf("remove %d snapshots", len(g.Remove)), []string{"ID", "Time", "Host", "Tags", "Paths"}, rows)
		}
	}
}

// parseAtFlag reads --at TIME: RFC 3339 or local time (see retention.ParseAt).
// The empty string gives the zero time.
func parseAtFlag(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := retention.ParseAt(s, time.Local)
	if err != nil {
		return t, fmt.Errorf("--at: %w", err)
	}
	return t, nil
}

// forgetWAL removes the archived WAL that no remaining base backup needs
// (walarchive.Unneeded); prune then frees its data.
func (a *app) forgetWAL(ctx context.Context, r *repo.Repository) error {
	files, err := r.ListWALFiles(ctx)
	if err != nil || len(files) == 0 {
		return err
	}
	sns, err := r.ListSnapshots(ctx)
	if err != nil {
		return fmt.Errorf("%w; archived WAL left as it is", err)
	}
	old := walarchive.Unneeded(files, sns)
	if err := r.RemoveWALFiles(ctx, old); err != nil {
		return fmt.Errorf("%d WAL files older than every kept base backup: %w", len(old), err)
	}
	if len(old) > 0 {
		a.forgetTextf("removed %d archived WAL files older than every kept base backup\n", len(old))
	}
	return nil
}

// snapshotOrAt checks that restore got exactly one of SNAPSHOT and --at,
// and reads --at.
func snapshotOrAt(args []string, at string) (time.Time, error) {
	if (len(args) == 1) == (at != "") {
		return time.Time{}, errors.New("give either a SNAPSHOT (ID, unique prefix or 'latest') or --at TIME, not both")
	}
	return parseAtFlag(at)
}

// snapshotAt returns the newest of sns (already filtered) taken at or
// before at, or an error saying there is none.
func snapshotAt(sns []*repo.Snapshot, at time.Time) (*repo.Snapshot, error) {
	sn := retention.SelectAt(sns, at)
	if sn == nil {
		return nil, fmt.Errorf("no matching snapshot was taken at or before %s", at.Local().Format("2006-01-02 15:04:05 MST"))
	}
	return sn, nil
}

// restoreSnapshot resolves restore's SNAPSHOT argument or, without one, the
// newest snapshot taken at or before at (--at). --host and --tag (all of
// the tags) narrow --at and 'latest'.
func (a *app) restoreSnapshot(ctx context.Context, r *repo.Repository, args []string, at time.Time, host string, tags []string) (*repo.Snapshot, error) {
	if len(args) == 1 && (args[0] != "latest" || len(tags) == 0) {
		return findSnapshot(ctx, r, args[0], host)
	}
	sns, listErr := r.ListSnapshots(ctx)
	if listErr != nil && len(sns) == 0 {
		return nil, listErr
	}
	want := splitTags(tags)
	var cand []*repo.Snapshot
	for _, sn := range sns {
		if (host == "" || sn.Hostname == host) && hasTags(sn.Tags, want) {
			cand = append(cand, sn)
		}
	}
	if len(args) == 1 { // 'latest' with --tag
		if len(cand) == 0 {
			return nil, errors.New("no snapshot found")
		}
		return cand[len(cand)-1], nil
	}
	sn, err := snapshotAt(cand, at)
	if err != nil {
		return nil, err
	}
	if !a.jsonOutput {
		const f = "2006-01-02 15:04:05 MST"
		a.printf("restoring snapshot %s taken at %s, the newest at or before %s\n", sn.ID.Short(), sn.Time.Local().Format(f), at.Local().Format(f))
	}
	return sn, nil
}
