package supervisor

import (
	"strconv"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/consumers"
	"github.com/pgsafekeeper/safekeeper/pkg/election"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/offload"
	"github.com/pgsafekeeper/safekeeper/pkg/retention"
	"github.com/pgsafekeeper/safekeeper/pkg/slots"
	"github.com/pgsafekeeper/safekeeper/pkg/upstream"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// Status describes one timeline for GET /v1/status.
type Status struct {
	TenantID     string                  `json:"tenant_id"`
	TimelineID   string                  `json:"timeline_id"`
	SystemID     string                  `json:"system_id"`
	PGVersion    string                  `json:"pg_version"`
	PGVersionNum int                     `json:"pg_version_num"`
	WalSegSize   uint64                  `json:"wal_seg_size"`
	TLI          uint32                  `json:"tli"`
	StartLSN     string                  `json:"start_lsn"`
	FlushLSN     string                  `json:"flush_lsn"`
	WrittenLSN   string                  `json:"written_lsn"`
	HasWAL       bool                    `json:"has_wal"`
	LocalStart   string                  `json:"local_start_lsn"`
	BackupLSN    string                  `json:"backup_lsn"`
	Oldest       string                  `json:"oldest_available_lsn"`
	Upstream     upstream.Status         `json:"upstream"`
	Archive      *ArchiveStatus          `json:"archive"`
	Retention    retention.Status        `json:"retention"`
	Consumers    []consumers.Status      `json:"consumers"`
	Slots        []slots.Status          `json:"replication_slots"`
	Rebootstrap  []consumers.Rebootstrap `json:"needs_rebootstrap"`
	Offloader    *OffloaderStatus        `json:"offloader"`
	Peers        []election.NodeInfo     `json:"peers"`
}

// OffloaderStatus says which safekeeper offloads the timeline.
type OffloaderStatus struct {
	Leader   string     `json:"leader"`    // its name; "" when none is known
	IsLeader bool       `json:"is_leader"` // this node offloads
	Since    *time.Time `json:"since,omitempty"`
	// Elected is false for a node without a cluster: it is always its
	// own offloader.
	Elected  bool             `json:"elected"`
	Election *election.Status `json:"election,omitempty"`
}

// ArchiveStatus is the offloader's state with the archive lag.
type ArchiveStatus struct {
	offload.Status
	// LagBytes is the WAL in complete segments that is not archived yet;
	// the segment being written cannot be, so it does not count.
	LagBytes uint64 `json:"archive_lag_bytes"`
}

// archiveLag is the archive lag in bytes: complete segments not archived.
func archiveLag(ctl walstore.Control) uint64 {
	if !ctl.Initialized() {
		return 0
	}
	if done := wal.SegmentStart(ctl.FlushLSN, ctl.WalSegSize); done > ctl.BackupLSN {
		return uint64(done - ctl.BackupLSN)
	}
	return 0
}

// Status returns a snapshot of the timeline.
func (s *Supervisor) Status() Status {
	ctl := s.tl.Control()
	st := Status{
		TenantID: ctl.TenantID, TimelineID: ctl.TimelineID,
		PGVersion: ctl.ServerVersion, PGVersionNum: ctl.ServerVersionNum,
		WalSegSize: ctl.WalSegSize, TLI: ctl.TLI,
		StartLSN: ctl.StartLSN.String(), FlushLSN: ctl.FlushLSN.String(),
		WrittenLSN: s.tl.WrittenLSN().String(),
		LocalStart: ctl.StartLSN.String(), BackupLSN: ctl.BackupLSN.String(),
		Oldest:    s.OldestLSN().String(),
		Retention: s.ret.Status(),
		HasWAL:    ctl.Initialized(),
		Consumers: s.consumers.List(), Slots: s.slots.List(),
		Rebootstrap: s.consumers.NeedsRebootstrap(),
	}
	if s.rcv != nil {
		st.Upstream = s.rcv.Status()
	} else {
		st.Upstream = upstream.Status{State: upstream.StateNone}
	}
	if s.off != nil {
		st.Archive = &ArchiveStatus{Status: s.off.Status()}
		st.Archive.LagBytes = archiveLag(ctl)
	}
	switch {
	case s.member != nil:
		es := s.member.Status()
		st.Offloader = &OffloaderStatus{Leader: es.Leader, IsLeader: es.IsLeader, Since: es.LeaderSince, Elected: true, Election: &es}
		st.Peers = es.Peers
	case s.off != nil:
		since := s.started
		st.Offloader = &OffloaderStatus{Leader: s.name(), IsLeader: true, Since: &since}
	}
	if st.Peers == nil {
		st.Peers = []election.NodeInfo{}
	}
	if ctl.SystemID != 0 {
		st.SystemID = strconv.FormatUint(ctl.SystemID, 10)
	}
	return st
}

// MetricsSample returns the timeline's state for the metrics collector.
func (s *Supervisor) MetricsSample() metrics.TimelineSample {
	ctl := s.tl.Control()
	rs := s.ret.Status()
	m := metrics.TimelineSample{
		TenantID: s.cfg.ID.TenantID, TimelineID: s.cfg.ID.TimelineID,
		LocalStartLSN: uint64(ctl.StartLSN), LocalBytes: rs.LocalBytes, LocalSegments: rs.LocalSegments,
		RemovedSegments: rs.RemovedSegments,
		WrittenLSN:      uint64(s.tl.WrittenLSN()), OldestLSN: uint64(s.OldestLSN()),
		MappedBytes: s.maps.MappedBytes(),
	}
	if ls := s.tl.LastSync(); !ls.IsZero() {
		m.LastSyncUnix = float64(ls.UnixNano()) / 1e9
	}
	if s.rcv != nil {
		us := s.rcv.Status()
		if lag, ok := us.Lag(); ok {
			end, _ := wal.ParseLSN(*us.WalEnd)
			m.UpstreamKnown, m.UpstreamWalEnd, m.UpstreamLagBytes = true, uint64(end), lag
		}
	}
	if s.off != nil {
		os := s.off.Status()
		m.Archive = true
		m.BackupLSN = uint64(ctl.BackupLSN)
		m.ArchiveLagBytes = archiveLag(ctl)
		m.UploadedBytes, m.UploadedObjects, m.UploadErrors = os.UploadedBytes, os.UploadedObjects, os.UploadErrors
		m.ArchiveConflict = os.Conflict != ""
	}
	return m
}

// ConsumerSamples returns the lag of each connected consumer for metrics.
func (s *Supervisor) ConsumerSamples() []metrics.ConsumerSample {
	flush := s.tl.FlushLSN()
	behind := func(v string) uint64 {
		l, err := wal.ParseLSN(v)
		if err != nil || l >= flush {
			return 0
		}
		return uint64(flush - l)
	}
	var out []metrics.ConsumerSample
	for _, c := range s.consumers.List() {
		cs := metrics.ConsumerSample{TenantID: s.cfg.ID.TenantID, TimelineID: s.cfg.ID.TimelineID,
			ApplicationName: c.ApplicationName, PID: c.PID, SentLag: behind(c.SentLSN)}
		if f := c.Feedback; f != nil {
			cs.HasFeedback, cs.FlushLag, cs.ApplyLag = true, behind(f.FlushLSN), behind(f.ApplyLSN)
		}
		out = append(out, cs)
	}
	return out
}
