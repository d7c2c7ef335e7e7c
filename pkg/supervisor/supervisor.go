package supervisor

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/internal/notify"
	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/consumers"
	"github.com/pgsafekeeper/safekeeper/pkg/election"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/offload"
	"github.com/pgsafekeeper/safekeeper/pkg/retention"
	"github.com/pgsafekeeper/safekeeper/pkg/slots"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/upstream"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// Config describes one hosted timeline and the services it runs.
type Config struct {
	Dir string      // the timeline's directory
	ID  timeline.ID // tenant and timeline id
	// NodeName is this safekeeper's --name.
	NodeName string
	// Upstream, when set, runs a receiver streaming WAL from the primary.
	Upstream *upstream.Config
	Slots    slots.Limits
	// Archive, when set, runs an offloader into it and makes it a read
	// tier and a retention holder.
	Archive *ArchiveConfig
	// WalKeepBytes is --wal-keep-size.
	WalKeepBytes uint64
	// WalMemoryBytes is --wal-memory-size: the most recent durable WAL
	// kept in memory for consumers (0: none).
	WalMemoryBytes uint64
	// Cluster, when set, makes the timeline a member of a safekeeper
	// cluster (etcd): peers, an elected offloader, a shared backup_lsn.
	// Without it the node is always its own offloader.
	Cluster *ClusterConfig
	// ElectionMetrics are the election's collectors (with Cluster).
	ElectionMetrics *election.Metrics
	// KeptMaps bounds the unused segment mappings all the process's
	// timelines keep together (nil: this timeline's own bound only).
	KeptMaps *walreader.MapBudget
}

// ArchiveConfig is the archive of a timeline.
type ArchiveConfig struct {
	Store       objstore.Store
	Compression archive.Compression
	Offload     offload.Config
}

// The timeline's consumers share the mappings of its finished segment
// files (walreader.SegmentMaps): one is dropped a minute after its last
// use or when retention removes its segment, and at most 4 GiB of unused
// ones are kept, within the process's Config.KeptMaps.
const (
	segmentMapIdle      = time.Minute
	segmentMapsKeptSize = 4 << 30
)

// Supervisor owns one hosted timeline: its WAL (timeline.Timeline), its
// replication slots and consumer registry, and the background services
// that act on it, started and stopped together by Run.
type Supervisor struct {
	cfg Config
	log *zap.Logger
	m   *metrics.Metrics
	tm  *metrics.Timeline // this timeline's series

	tl        *timeline.Timeline
	slots     *slots.Set
	consumers *consumers.Registry
	rcv       *upstream.Receiver     // nil without an upstream
	ar        *archive.Archive       // nil without an archive
	off       *offload.Offloader     // nil without an archive
	ret       *retention.Retainer    // always
	maps      *walreader.SegmentMaps // always
	member    *election.Member       // nil without a cluster
	started   time.Time
	// clusterChanged wakes the election when this node's NodeInfo may
	// have changed (see relayClusterChanges).
	clusterChanged notify.Broadcast
}

// Open opens (or creates) the timeline's directory, recovering the end of
// WAL, and loads its slots. Nothing runs until Run.
func Open(cfg Config, log *zap.Logger, m *metrics.Metrics) (*Supervisor, error) {
	log = log.With(zap.String("tenant_id", cfg.ID.TenantID), zap.String("timeline_id", cfg.ID.TimelineID))
	tl, err := timeline.Open(cfg.Dir, cfg.ID, log)
	if err != nil {
		return nil, err
	}
	tl.SetMemoryWindow(cfg.WalMemoryBytes)
	s := &Supervisor{cfg: cfg, log: log, m: m, tm: m.ForTimeline(cfg.ID.TenantID, cfg.ID.TimelineID), tl: tl,
		consumers: consumers.NewRegistry(), started: time.Now()}
	s.tm.FlushLSN.Set(float64(tl.FlushLSN()))
	if s.slots, err = slots.Open(tl.Dir().File(slots.FileName), cfg.Slots, s, log); err != nil {
		tl.Close()
		return nil, err
	}
	if a := cfg.Archive; a != nil {
		if s.ar, err = archive.New(a.Store, cfg.ID.TenantID, cfg.ID.TimelineID, a.Compression); err != nil {
			tl.Close()
			return nil, err
		}
		if prev, err := tl.BindArchive(a.Store.String()); err != nil {
			tl.Close()
			return nil, err
		} else if prev != "" {
			log.Warn("the archive changed: archiving starts again from the local start; WAL below it is not in the new archive",
				zap.String("previous", prev), zap.String("archive", a.Store.String()), zap.Stringer("local_start_lsn", tl.LocalStartLSN()))
		}
		s.off = offload.New(a.Offload, tl, s.ar, log.Named("offload"), m.UploadSeconds)
		ar := s.ar
		tl.SetArchive(func(ctx context.Context, tli uint32, segno, segSize, systemID uint64) ([]byte, error) {
			return ar.GetSegment(ctx, tli, segno, archive.Identity{SystemID: systemID, SegSize: segSize})
		})
	}
	var src upstream.Sources
	if s.ar != nil {
		ar := s.ar
		src.Archive = func(ctx context.Context, tli uint32, segno, segSize, systemID uint64) ([]byte, error) {
			return ar.GetSegment(ctx, tli, segno, archive.Identity{SystemID: systemID, SegSize: segSize})
		}
	}
	if c := cfg.Cluster; c != nil {
		ecfg := c.Election
		ecfg.Metrics = cfg.ElectionMetrics
		s.member = election.NewMember(ecfg, cfg.ID.TenantID, cfg.ID.TimelineID, c.Addr, clusterLocal{s}, s.lead, log.Named("election"))
		src.Peers = s.peers
		src.PeerConnString = c.PeerConnString
	}
	if cfg.Upstream != nil {
		ucfg := *cfg.Upstream
		if s.member != nil {
			ucfg.InitialStart = s.initialStart
		}
		s.rcv = upstream.New(ucfg, src, tl, s.consumers, log.Named("upstream"), s.tm)
	}
	s.maps = walreader.NewSegmentMaps(segmentMapIdle, segmentMapsKeptSize, cfg.KeptMaps)
	s.ret = retention.New(retention.Config{Archived: s.ar != nil, WalKeepBytes: cfg.WalKeepBytes},
		unmappingRemover{tl, s.maps}, s.slots, s.consumers, log.Named("retention"))
	return s, nil
}

// unmappingRemover is the timeline as retention sees it: segments it
// removes lose their shared mappings, which would keep their disk blocks.
type unmappingRemover struct {
	*timeline.Timeline
	maps *walreader.SegmentMaps
}

func (u unmappingRemover) RemoveBefore(lsn wal.LSN) ([]string, error) {
	removed, err := u.Timeline.RemoveBefore(lsn)
	if segSize := u.Control().WalSegSize; segSize != 0 {
		u.maps.DropBelow(wal.SegmentNo(u.LocalStartLSN(), segSize))
	}
	return removed, err
}

// service is one background task of a timeline. It runs until ctx ends and
// returns an error only for a failure that must stop the process.
type service struct {
	name string
	run  func(ctx context.Context) error
}

// Run starts the timeline's services and blocks until ctx ends or one of
// them fails; then it stops the others and returns the failure (nil after
// a cancellation).
func (s *Supervisor) Run(ctx context.Context) error {
	var svcs []service
	if s.rcv != nil {
		svcs = append(svcs, service{"upstream receiver", s.rcv.Run})
	} else {
		s.log.Warn("no upstream configured: serving the WAL already held, receiving none")
	}
	switch {
	case s.member != nil:
		// The offloader runs only while this node is the elected one.
		if s.off != nil {
			s.off.SetFollower()
		}
		svcs = append(svcs, service{"cluster membership", s.member.Run}, service{"shared backup_lsn", s.readoptOnSwitch},
			service{"cluster change relay", s.relayClusterChanges})
	case s.off != nil:
		svcs = append(svcs, service{"offloader", s.off.Run})
	}
	svcs = append(svcs, service{"retention", s.ret.Run})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, svc := range svcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := svc.run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				s.log.Error("timeline service failed", zap.String("service", svc.name), zap.Error(err))
				once.Do(func() { first = err })
				cancel()
			}
		}()
	}
	wg.Wait()
	return first
}

// Close persists slot positions, makes everything durable and records the
// final position. Call it after Run has returned.
func (s *Supervisor) Close() error {
	s.consumers.Close()
	s.maps.Close()
	s.slots.Close()
	s.m.DeleteTimeline(s.cfg.ID.TenantID, s.cfg.ID.TimelineID)
	return s.tl.Close()
}

// Metrics returns the timeline's series.
func (s *Supervisor) Metrics() *metrics.Timeline { return s.tm }

func (s *Supervisor) name() string { return s.cfg.NodeName }

// ID returns the timeline's id.
func (s *Supervisor) ID() timeline.ID { return s.cfg.ID }

// Timeline returns the timeline's WAL.
func (s *Supervisor) Timeline() *timeline.Timeline { return s.tl }

// Slots returns the timeline's replication slots.
func (s *Supervisor) Slots() *slots.Set { return s.slots }

// Consumers returns the timeline's consumer registry.
func (s *Supervisor) Consumers() *consumers.Registry { return s.consumers }

// The walsender's view of the timeline (walsender.Timeline).

// Control returns the timeline's control data.
func (s *Supervisor) Control() walstore.Control { return s.tl.Control() }

// FlushLSN returns the durable end of WAL.
func (s *Supervisor) FlushLSN() wal.LSN { return s.tl.FlushLSN() }

// Changed returns the timeline's wake-up channel.
func (s *Supervisor) Changed() <-chan struct{} { return s.tl.Changed() }

// WalLevel returns the upstream's wal_level ("" while unknown).
func (s *Supervisor) WalLevel() string { return s.tl.WalLevel() }

// CurrentTLI returns the PostgreSQL timeline being written.
func (s *Supervisor) CurrentTLI() uint32 { return s.tl.CurrentTLI() }

// HistoryEntries returns the history of the current TLI.
func (s *Supervisor) HistoryEntries() []wal.HistoryEntry { return s.tl.HistoryEntries() }

// History returns a stored history file.
func (s *Supervisor) History(tli uint32) ([]byte, error) { return s.tl.History(tli) }

// OldestLSN returns the oldest WAL position any tier holds: the local
// start, or the oldest segment known to be archived when that is older.
func (s *Supervisor) OldestLSN() wal.LSN {
	oldest := s.tl.LocalStartLSN()
	if s.off != nil {
		if a, ok := s.off.ArchiveStart(); ok && a < oldest {
			oldest = a
		}
	}
	return oldest
}

// OpenReader returns a reader over the timeline's tiers for one consumer:
// the memory window, the local segment files, then the archive. Its reads
// are counted in safekeeper_wal_read_bytes_total by tier.
func (s *Supervisor) OpenReader() *walreader.Reader {
	ctl := s.tl.Control()
	var tiers []walreader.Tier
	if m := s.tl.Memory(); m != nil {
		tiers = append(tiers, walreader.NewMemoryTier(m))
	}
	lt := walreader.NewLocalTier(s.tl.Dir(), ctl.WalSegSize)
	lt.ShareMaps(s.maps)
	tiers = append(tiers, lt)
	if s.ar != nil {
		id := archive.Identity{SystemID: ctl.SystemID, SegSize: ctl.WalSegSize}
		tiers = append(tiers, walreader.NewArchiveTier(s.ar, id, s.tl.LocalStartLSN))
	}
	rd := walreader.New(ctl.WalSegSize, tiers...)
	rd.Observe(s.tm)
	return rd
}
