package maint

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText writes r as aligned, human-readable tables, one section per
// concern (tables, indexes, unused and redundant indexes, wraparound,
// replication). It returns the first write error.
func (r *Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	p := func(format string, args ...any) { fmt.Fprintf(ew, format, args...) }
	table := func(header string, rows [][]string) {
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, header)
		for _, row := range rows {
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		_ = tw.Flush()
	}

	p("hsdal maintenance report: database %s on %s (PostgreSQL %s) at %s\n",
		r.Database, r.Server, r.ServerVersion, r.At.UTC().Format(time.RFC3339))
	since := "server start"
	if r.StatsSince != nil {
		since = r.StatsSince.UTC().Format(time.RFC3339)
	}

	p("\nTABLES\n")
	var rows [][]string
	for _, t := range r.Tables {
		rows = append(rows, []string{t.Table, bytesText(t.TotalBytes), bytesText(t.HeapBytes), bytesText(t.IndexBytes),
			fmt.Sprint(t.Live), fmt.Sprint(t.Dead), pct(t.DeadRatio()), ago(r.At, t.LastVacuum), ago(r.At, t.LastAnalyze),
			fmt.Sprint(t.XIDAge)})
	}
	table("table\ttotal\theap\tindexes\tlive\tdead\tdead%\tlast vacuum\tlast analyze\txid age", rows)

	p("\nINDEXES (scans since %s)\n", since)
	rows = rows[:0]
	for _, s := range r.Indexes {
		bloat := "-"
		if s.Bloat != nil {
			bloat = pct(*s.Bloat) + " (" + string(s.BloatMethod) + ")"
		}
		flags := []string{}
		if s.Primary {
			flags = append(flags, "primary")
		} else if s.Unique {
			flags = append(flags, "unique")
		}
		if s.ForeignKey != "" {
			flags = append(flags, "fk")
		}
		if !s.Valid {
			flags = append(flags, "INVALID")
		}
		rows = append(rows, []string{s.Table, s.Index, s.AccessMethod, bytesText(s.Bytes), fmt.Sprint(s.Scans), bloat,
			strings.Join(flags, ",")})
	}
	table("table\tindex\ttype\tsize\tscans\tbloat\tflags", rows)

	p("\nUNUSED INDEXES (no scans since %s, enforce no constraint, serve no foreign key)\n", since)
	if len(r.Unused) == 0 {
		p("  none\n")
	} else {
		rows = rows[:0]
		for _, s := range r.Unused {
			rows = append(rows, []string{s.Table, s.Index, bytesText(s.Bytes)})
		}
		table("table\tindex\tsize", rows)
	}

	p("\nREDUNDANT INDEXES\n")
	if len(r.Redundant) == 0 {
		p("  none\n")
	} else {
		rows = rows[:0]
		for _, x := range r.Redundant {
			rows = append(rows, []string{x.Table, x.Index, x.Kind, x.CoveredBy, bytesText(x.Bytes)})
		}
		table("table\tindex\tkind\tcovered by\tsize", rows)
	}

	p("\nTRANSACTION ID WRAPAROUND (autovacuum_freeze_max_age %d; wraparound at 2^31-1)\n", r.FreezeMaxAge)
	rows = rows[:0]
	for _, d := range r.Databases {
		rows = append(rows, []string{d.Database, fmt.Sprint(d.Age), pct(float64(d.Age) / float64(1<<31-1)),
			fmt.Sprint(d.Remaining()), fmt.Sprint(d.MXIDAge)})
	}
	table("database\txid age\tof limit\tremaining\tmxid age", rows)

	p("\nREPLICATION SLOTS\n")
	if len(r.Slots) == 0 {
		p("  none\n")
	} else {
		rows = rows[:0]
		for _, s := range r.Slots {
			retained := "-"
			if s.RetainedBytes != nil {
				retained = bytesText(*s.RetainedBytes)
			}
			rows = append(rows, []string{s.Name, s.Type, yesNo(s.Active), s.RestartLSN, retained, s.WALStatus})
		}
		table("slot\ttype\tactive\trestart lsn\tretained wal\twal status", rows)
	}

	p("\nREPLICAS\n")
	if len(r.Replicas) == 0 {
		p("  none connected\n")
	} else {
		rows = rows[:0]
		for _, x := range r.Replicas {
			rows = append(rows, []string{x.Name, x.ClientAddr, x.State, x.SyncState,
				bytesText(x.SentLagBytes), bytesText(x.ReplayLagBytes), dur(x.WriteLag), dur(x.FlushLag), dur(x.ReplayLag)})
		}
		table("name\taddress\tstate\tsync\tsend lag\treplay lag\twrite lag\tflush lag\treplay lag time", rows)
	}

	if r.Orphans != nil {
		p("\nORPHANS (rows whose foreign-key parent is missing)\n")
		rows = rows[:0]
		for _, o := range r.Orphans {
			rows = append(rows, []string{o.Table, o.Constraint, strings.Join(o.Columns, ","), o.Parent,
				fmt.Sprint(o.Rows), string(o.Repair)})
		}
		table("table\tforeign key\tcolumns\tparent\torphans\trepair", rows)
	}
	return ew.err
}

// WriteText writes the result as one line per action (orphan checks that
// found nothing are left out).
func (r Result) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "%s: %s in %s\n", r.Job, r.Outcome, r.Duration.Round(time.Millisecond))
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	for _, a := range r.Actions {
		if a.Kind == ActionFound && a.Rows == 0 {
			continue
		}
		obj := a.Table
		if a.Object != "" {
			obj += " " + a.Object
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", a.Kind, obj, a.Rows, a.Detail)
	}
	_ = tw.Flush()
	return ew.err
}

type errWriter struct {
	w   io.Writer
	err error
}

// Write writes p unless an earlier write failed.
func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func pct(v float64) string { return fmt.Sprintf("%.1f%%", v*100) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func ago(now time.Time, t *time.Time) string {
	if t == nil {
		return "never"
	}
	d := now.Sub(*t)
	if d < 0 {
		d = 0
	}
	return d.Round(time.Second).String() + " ago"
}

func dur(d *time.Duration) string {
	if d == nil {
		return "-"
	}
	return d.Round(time.Microsecond).String()
}
