package walverify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// DefaultConcurrency is how many objects are checked at once by default.
const DefaultConcurrency = 4

// defaultSegSize numbers segments when no object records a usable size.
const defaultSegSize = 16 << 20

// Gap is a run of segment numbers no archived segment covers.
type Gap struct {
	From, To uint64 // first and last missing segment numbers
	TLI      uint32 // timeline of the segment before the gap (to name it)
}

// Failure is an object that could not be verified.
type Failure struct {
	Key string
	Err error
}

// Report is what Verify found in one timeline's archive.
type Report struct {
	TenantID, TimelineID string
	Location             string // the archive, for the report

	// Identity every object must agree with, read from RefKey's metadata.
	RefKey   string
	SystemID uint64
	SegSize  uint64

	Segments    int
	First, Last string // first and last segment names
	Histories   []string

	Gaps           []Gap
	Duplicates     []string // segment names stored both plain and compressed
	Unrecognised   []string // keys that are neither segments nor history files
	MissingHistory []uint32 // timelines with segments but no history file
	Failed         []Failure
	Issues         []string // anything else (no objects, unusable metadata)
}

// Problems counts the problems found.
func (r *Report) Problems() int {
	return len(r.Gaps) + len(r.Duplicates) + len(r.Unrecognised) + len(r.MissingHistory) + len(r.Failed) + len(r.Issues)
}

// Options tune Verify.
type Options struct {
	// Concurrency is how many objects are downloaded and checked at once
	// (DefaultConcurrency when 0).
	Concurrency int
}

// Timelines returns the (tenant, timeline) pairs with WAL in store.
func Timelines(ctx context.Context, store objstore.Store) ([][2]string, error) {
	return archive.Timelines(ctx, store)
}

// Verify checks the archive of one timeline. It returns an error only when
// the archive cannot be listed or its identity not read; everything else
// is in the report.
func Verify(ctx context.Context, store objstore.Store, tenantID, timelineID string, opt Options) (*Report, error) {
	ar, err := archive.New(store, tenantID, timelineID, archive.Zstd)
	if err != nil {
		return nil, err
	}
	r := &Report{TenantID: tenantID, TimelineID: timelineID, Location: ar.String()}
	prefix := archive.WALPrefix(tenantID, timelineID)

	// The segment size numbers segments, and only an object's metadata
	// records it: find the first segment (or else history file) among the
	// raw keys, and read its identity.
	raw, err := store.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", r.Location, err)
	}
	if len(raw) == 0 {
		r.Issues = append(r.Issues, "no WAL objects")
		return r, nil
	}
	for _, in := range raw {
		name := strings.TrimSuffix(strings.TrimPrefix(in.Key, prefix), archive.ZstdSuffix)
		if wal.IsSegmentName(name) {
			r.RefKey = in.Key
			break
		}
		if _, ok := wal.ParseHistoryFileName(name); ok && r.RefKey == "" {
			r.RefKey = in.Key // unless a segment comes later
		}
	}
	id := archive.Identity{}
	listSegSize := uint64(defaultSegSize)
	if r.RefKey != "" {
		info, err := store.Head(ctx, r.RefKey)
		if err != nil {
			return nil, fmt.Errorf("read the metadata of %s: %w", r.RefKey, err)
		}
		sys, err := strconv.ParseUint(info.Meta[archive.MetaSystemID], 10, 64)
		if err != nil || sys == 0 {
			r.Issues = append(r.Issues, fmt.Sprintf("%s records no usable system identifier (%q); system identifiers not compared", r.RefKey, info.Meta[archive.MetaSystemID]))
		} else {
			r.SystemID, id.SystemID = sys, sys
		}
		if wal.IsSegmentName(strings.TrimSuffix(strings.TrimPrefix(r.RefKey, prefix), archive.ZstdSuffix)) {
			seg, err := strconv.ParseUint(info.Meta[archive.MetaSegSize], 10, 64)
			if err != nil || !wal.ValidSegmentSize(seg) {
				r.Issues = append(r.Issues, fmt.Sprintf("%s records no valid segment size (%q); segments numbered as %s", r.RefKey, info.Meta[archive.MetaSegSize], wal.FormatSegmentSize(listSegSize)))
			} else {
				r.SegSize, id.SegSize, listSegSize = seg, seg, seg
			}
		}
	}

	segments, histories, other, err := ar.List(ctx, listSegSize)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", r.Location, err)
	}
	r.Segments = len(segments)
	r.Unrecognised = other
	if len(segments) > 0 {
		r.First, r.Last = segments[0].Name, segments[len(segments)-1].Name
	}
	haveHistory := map[uint32]bool{}
	for _, h := range histories {
		r.Histories = append(r.Histories, h.Name)
		haveHistory[h.TLI] = true
	}
	segTLIs := map[uint32]bool{}
	for i, s := range segments {
		segTLIs[s.TLI] = true
		if i == 0 {
			continue
		}
		prev := segments[i-1]
		if s.Name == prev.Name {
			r.Duplicates = append(r.Duplicates, s.Name)
		}
		if s.SegNo > prev.SegNo+1 {
			r.Gaps = append(r.Gaps, Gap{From: prev.SegNo + 1, To: s.SegNo - 1, TLI: prev.TLI})
		}
	}
	for tli := range segTLIs {
		if tli > 1 && !haveHistory[tli] {
			r.MissingHistory = append(r.MissingHistory, tli)
		}
	}
	sort.Slice(r.MissingHistory, func(i, j int) bool { return r.MissingHistory[i] < r.MissingHistory[j] })

	r.Failed = checkAll(ctx, ar, append(segments, histories...), id, opt.Concurrency)
	return r, nil
}

// checkAll downloads and verifies every entry, a few at once, and returns
// the failures in the entries' order.
func checkAll(ctx context.Context, ar *archive.Archive, entries []archive.Entry, id archive.Identity, concurrency int) []Failure {
	if concurrency <= 0 {
		concurrency = DefaultConcurrency
	}
	errs := make([]error, len(entries))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(concurrency, len(entries)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				errs[i] = check(ctx, ar, entries[i], id)
			}
		}()
	}
	for i := range entries {
		next <- i
	}
	close(next)
	wg.Wait()
	var out []Failure
	for i, err := range errs {
		if err != nil {
			out = append(out, Failure{Key: entries[i].Key, Err: err})
		}
	}
	return out
}

func check(ctx context.Context, ar *archive.Archive, e archive.Entry, id archive.Identity) error {
	if !e.History {
		_, err := ar.Check(ctx, e, id)
		return err
	}
	// Fetch verifies a history file as Check does, and returns its
	// content, which must parse.
	content, err := ar.Fetch(ctx, e.Name, id)
	if err != nil {
		return err
	}
	if _, err := wal.ParseHistory(content, e.TLI); err != nil {
		return fmt.Errorf("%w: %s: %w", archive.ErrCorrupt, e.Key, err)
	}
	return nil
}

// Write prints the report for people.
func (r *Report) Write(w io.Writer) {
	fmt.Fprintf(w, "timeline %s/%s (%s)\n", r.TenantID, r.TimelineID, r.Location)
	if r.RefKey != "" {
		sys, seg := "unknown", "unknown"
		if r.SystemID != 0 {
			sys = strconv.FormatUint(r.SystemID, 10)
		}
		if r.SegSize != 0 {
			seg = wal.FormatSegmentSize(r.SegSize)
		}
		fmt.Fprintf(w, "  system identifier %s, segment size %s (from %s)\n", sys, seg, r.RefKey)
	}
	if r.Segments == 0 {
		fmt.Fprintf(w, "  segments: 0\n")
	} else {
		fmt.Fprintf(w, "  segments: %d, %s .. %s\n", r.Segments, r.First, r.Last)
	}
	if len(r.Histories) == 0 {
		fmt.Fprintf(w, "  history files: none\n")
	} else {
		fmt.Fprintf(w, "  history files: %s\n", strings.Join(r.Histories, ", "))
	}
	segSize := r.SegSize
	if segSize == 0 {
		segSize = defaultSegSize
	}
	section := func(title string, n int, line func(i int) string) {
		if n == 0 {
			return
		}
		fmt.Fprintf(w, "  %s: %d\n", title, n)
		for i := range n {
			fmt.Fprintf(w, "    %s\n", line(i))
		}
	}
	section("gaps", len(r.Gaps), func(i int) string {
		g := r.Gaps[i]
		n := g.To - g.From + 1
		names := wal.SegmentFileName(g.TLI, g.From, segSize)
		if n > 1 {
			names += " .. " + wal.SegmentFileName(g.TLI, g.To, segSize)
		}
		return fmt.Sprintf("missing %s (%d segment%s, WAL %s .. %s)",
			names, n, plural(n), wal.LSN(g.From*segSize), wal.LSN((g.To+1)*segSize))
	})
	section("duplicates (stored both plain and compressed)", len(r.Duplicates), func(i int) string { return r.Duplicates[i] })
	section("timelines without their history file", len(r.MissingHistory), func(i int) string {
		return fmt.Sprintf("timeline %d: %s missing", r.MissingHistory[i], wal.HistoryFileName(r.MissingHistory[i]))
	})
	section("unrecognised keys", len(r.Unrecognised), func(i int) string { return r.Unrecognised[i] })
	section("objects that failed verification", len(r.Failed), func(i int) string {
		f := r.Failed[i]
		what := "unreadable"
		switch {
		case errors.Is(f.Err, archive.ErrCorrupt):
			what = "corrupt"
		case errors.Is(f.Err, archive.ErrNotFound):
			what = "vanished"
		}
		// The archive's errors repeat the key: say it once.
		msg := strings.TrimPrefix(f.Err.Error(), archive.ErrCorrupt.Error()+": ")
		msg = strings.TrimPrefix(strings.TrimPrefix(msg, f.Key+": "), f.Key+" ")
		return fmt.Sprintf("%s: %s: %s", f.Key, what, msg)
	})
	section("other problems", len(r.Issues), func(i int) string { return r.Issues[i] })
	if n := r.Problems(); n == 0 {
		fmt.Fprintf(w, "  OK\n")
	} else {
		fmt.Fprintf(w, "  %d problem%s\n", n, plural(uint64(n)))
	}
}

func plural(n uint64) string {
	if n == 1 {
		return ""
	}
	return "s"
}
