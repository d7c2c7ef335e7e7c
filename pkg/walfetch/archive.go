package walfetch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// ArchiveSource fetches files from a timeline's WAL archive.
type ArchiveSource struct {
	Store objstore.Store
	// TenantID and TimelineID name the timeline; when both are empty the
	// store must hold the WAL of exactly one timeline, which is used.
	TenantID, TimelineID string
	// Identity is checked against every object's metadata; zero fields
	// are not checked. Whatever it says, a segment must hold exactly the
	// segment size its object records, and its name must be a valid
	// segment name for that size.
	Identity archive.Identity

	mu       sync.Mutex
	ar       *archive.Archive
	tenant   string // resolved
	timeline string
}

// String implements Source.
func (s *ArchiveSource) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ar != nil {
		return "archive " + s.ar.String()
	}
	return "archive " + s.Store.String()
}

// Timeline resolves the timeline: the configured one, or the only one in
// the store.
func (s *ArchiveSource) Timeline(ctx context.Context) (tenantID, timelineID string, err error) {
	if _, err := s.open(ctx); err != nil {
		return "", "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tenant, s.timeline, nil
}

func (s *ArchiveSource) open(ctx context.Context) (*archive.Archive, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ar != nil {
		return s.ar, nil
	}
	tenant, tl := s.TenantID, s.TimelineID
	if (tenant == "") != (tl == "") {
		return nil, errors.New("give both the tenant id and the timeline id, or neither")
	}
	if tenant == "" {
		pairs, err := archive.Timelines(ctx, s.Store)
		if err != nil {
			return nil, fmt.Errorf("list the timelines in %s: %w", s.Store, err)
		}
		switch len(pairs) {
		case 0:
			return nil, fmt.Errorf("%s holds no timeline's WAL; pass --tenant-id and --timeline-id to name the timeline", s.Store)
		case 1:
			tenant, tl = pairs[0][0], pairs[0][1]
		default:
			var names []string
			for _, p := range pairs {
				names = append(names, p[0]+"/"+p[1])
			}
			return nil, fmt.Errorf("%s holds the WAL of %d timelines (%s); choose one with --tenant-id and --timeline-id",
				s.Store, len(pairs), strings.Join(names, ", "))
		}
	}
	ar, err := archive.New(s.Store, tenant, tl, archive.Zstd)
	if err != nil {
		return nil, err
	}
	s.ar, s.tenant, s.timeline = ar, tenant, tl
	return ar, nil
}

// Fetch implements Source.
func (s *ArchiveSource) Fetch(ctx context.Context, name string) (Result, error) {
	ar, err := s.open(ctx)
	if err != nil {
		return Result{}, err
	}
	data, err := ar.Fetch(ctx, name, s.Identity)
	if errors.Is(err, archive.ErrNotFound) {
		return Result{}, fmt.Errorf("%w in archive %s", ErrNotFound, ar)
	}
	if err != nil {
		return Result{}, err
	}
	if Classify(name) == Segment {
		// The object recorded its own segment size and the content has
		// that size (Fetch checked); the name must fit it too.
		if _, _, ok := wal.ParseSegmentFileName(name, uint64(len(data))); !ok {
			return Result{}, fmt.Errorf("%w: %s holds %d bytes, not a segment size that name fits", archive.ErrCorrupt, name, len(data))
		}
	}
	return Result{Data: data, From: "archive " + ar.String(), Durable: len(data)}, nil
}
