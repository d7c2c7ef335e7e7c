package walfetch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// ErrNotFound is wrapped by errors that mean "the file is not there": a
// source answered that it does not hold it, or, from Fetcher.Fetch, every
// source did.
var ErrNotFound = errors.New("not found")

// Source is one place a WAL file can come from.
type Source interface {
	// Fetch returns the whole content of the file PostgreSQL calls name:
	// a segment (padded with zeros when the source holds only its
	// beginning) or a history file. It returns an error wrapping
	// ErrNotFound when the source answered that it does not hold the
	// file; any other error means it could not answer.
	Fetch(ctx context.Context, name string) (Result, error)
	// String names the source for logs.
	String() string
}

// Result is a fetched file.
type Result struct {
	Data []byte
	// From says where the file came from, for the log line.
	From string
	// Durable is how many bytes at the start of Data are WAL the source
	// holds; it is len(Data) unless the source held only the beginning of
	// the segment and the rest is zeros.
	Durable int
}

// Partial reports whether Data ends with zeros the source did not hold.
func (r Result) Partial() bool { return r.Durable < len(r.Data) }

// Kind is what a file name names.
type Kind int

// Kinds of names.
const (
	NotWAL Kind = iota
	Segment
	History
)

// Classify says whether name is a segment name (24 upper-case hex digits,
// whatever the segment size), a history file name, or anything else
// (.partial, .backup, garbage), which no source is asked for.
func Classify(name string) Kind {
	if _, ok := wal.ParseHistoryFileName(name); ok {
		return History
	}
	if wal.IsSegmentName(name) {
		return Segment
	}
	return NotWAL
}

// Defaults of Fetcher.
const (
	DefaultAttempts = 3
	DefaultBackoff  = 500 * time.Millisecond
)

// Fetcher asks its sources for a file, in order.
type Fetcher struct {
	Sources []Source
	// Attempts is how many times the sources are asked when one of them
	// could not answer (DefaultAttempts when 0); the caller's context
	// bounds the whole.
	Attempts int
	// Backoff is the pause after the first failed attempt, doubled after
	// each one (DefaultBackoff when 0).
	Backoff time.Duration
	// Logf, when set, is told about failed attempts that will be retried.
	Logf func(format string, args ...any)
}

// Fetch returns the file name from the first source that has it. It
// returns an error wrapping ErrNotFound only when every source answered
// that it does not hold the file (or name is not a WAL file name); when a
// source could not answer and no other had the file, the sources are
// asked again, up to Attempts times, and the last failure is returned.
func (f *Fetcher) Fetch(ctx context.Context, name string) (Result, error) {
	if Classify(name) == NotWAL {
		return Result{}, fmt.Errorf("%w: %q is not a WAL segment or history file name", ErrNotFound, name)
	}
	if len(f.Sources) == 0 {
		return Result{}, errors.New("no sources configured")
	}
	attempts, backoff := f.Attempts, f.Backoff
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	if backoff <= 0 {
		backoff = DefaultBackoff
	}
	for attempt := 1; ; attempt++ {
		res, err := f.once(ctx, name)
		if err == nil || errors.Is(err, ErrNotFound) {
			return res, err
		}
		if attempt >= attempts {
			return Result{}, fmt.Errorf("after %d attempts: %w", attempt, err)
		}
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("after %d attempts (out of time): %w", attempt, err)
		}
		if f.Logf != nil {
			f.Logf("%s: attempt %d of %d failed, retrying in %s: %v", name, attempt, attempts, backoff, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return Result{}, fmt.Errorf("after %d attempts (out of time): %w", attempt, err)
		case <-t.C:
		}
		backoff *= 2
	}
}

// once asks every source in turn. A complete file from any source is
// the answer. A partial segment (WAL followed by zeros) is accepted only
// when every source answered: a source that could not be asked may hold
// more of the segment (acknowledged commits), and ending recovery at the
// zeros would lose them.
func (f *Fetcher) once(ctx context.Context, name string) (Result, error) {
	var failed []error
	var absent []string
	var partial *Result
	for _, s := range f.Sources {
		res, err := s.Fetch(ctx, name)
		if err == nil {
			if res.From == "" {
				res.From = s.String()
			}
			if !res.Partial() {
				return res, nil
			}
			if partial == nil || res.Durable > partial.Durable {
				partial = &res
			}
			continue
		}
		if errors.Is(err, ErrNotFound) {
			absent = append(absent, err.Error())
			continue
		}
		failed = append(failed, fmt.Errorf("%s: %w", s, err))
	}
	if len(failed) > 0 {
		if partial != nil {
			failed = append([]error{fmt.Errorf("only a partial segment is available (from %s) and not every source could be asked", partial.From)}, failed...)
		}
		return Result{}, errors.Join(failed...)
	}
	if partial != nil {
		return *partial, nil
	}
	return Result{}, notFoundError(strings.Join(absent, "; "))
}

// notFoundError gathers the sources' "not there" answers.
type notFoundError string

func (e notFoundError) Error() string { return string(e) }
func (e notFoundError) Unwrap() error { return ErrNotFound }

// WriteFile writes data to path atomically (walstore.WriteFileAtomic:
// temp file, fsync, rename over path, fsync the directory), mode 0600 as
// PostgreSQL's own WAL files.
func WriteFile(path string, data []byte) error {
	return walstore.WriteFileAtomic(path, data, 0o600)
}
