package supervisor

import (
	"strconv"

	"github.com/pgsafekeeper/safekeeper/pkg/consumers"
	"github.com/pgsafekeeper/safekeeper/pkg/slots"
	"github.com/pgsafekeeper/safekeeper/pkg/upstream"
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
	Upstream     upstream.Status         `json:"upstream"`
	Consumers    []consumers.Status      `json:"consumers"`
	Slots        []slots.Status          `json:"replication_slots"`
	Rebootstrap  []consumers.Rebootstrap `json:"needs_rebootstrap"`
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
		HasWAL:     ctl.Initialized(),
		Consumers:  s.consumers.List(), Slots: s.slots.List(),
		Rebootstrap: s.consumers.NeedsRebootstrap(),
	}
	if s.rcv != nil {
		st.Upstream = s.rcv.Status()
	} else {
		st.Upstream = upstream.Status{State: upstream.StateNone, WalEnd: "0/0"}
	}
	if ctl.SystemID != 0 {
		st.SystemID = strconv.FormatUint(ctl.SystemID, 10)
	}
	return st
}
