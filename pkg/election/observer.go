package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// view is what the observer knows of a timeline's keys.
type view struct {
	nodes      map[string]NodeInfo
	candidates map[string]candidacy // by election key
	backup     BackupPos
	haveBackup bool
}

// candidacy is one key under offloader/: the candidate's name and when it
// joined.
type candidacy struct {
	name      string
	createRev int64
}

// leader returns the name of the candidate that joined first, which is the
// leader, or "" when there is no candidate.
func (v *view) leader() string {
	var best candidacy
	for _, c := range v.candidates {
		if best.createRev == 0 || c.createRev < best.createRev {
			best = c
		}
	}
	return best.name
}

// observe keeps the member's view of the timeline current: a Get of the
// timeline's keys, then a watch from the revision after it; when the watch
// fails (compaction, cancellation by the server, a closed channel) it
// starts over. Every backup_lsn value read is passed to Local.AdoptBackup.
func (m *Member) observe(ctx context.Context) {
	retry := backoff{min: retryMin / 2, max: retryMax}
	for {
		v, rev, err := m.load(ctx)
		if err == nil {
			m.etcdOK()
			retry.reset()
			m.show(v, v.haveBackup)
			err = m.follow(ctx, v, rev+1)
		}
		if ctx.Err() != nil {
			return
		}
		m.etcdFailed("observe timeline", err)
		if !sleepCtx(ctx, retry.next()) {
			return
		}
	}
}

// load reads all of the timeline's keys.
func (m *Member) load(ctx context.Context) (*view, int64, error) {
	gctx, cancel := context.WithTimeout(ctx, m.cfg.opTimeout())
	defer cancel()
	resp, err := m.cfg.Client.Get(gctx, m.keys.timeline+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	v := &view{nodes: map[string]NodeInfo{}, candidates: map[string]candidacy{}}
	for _, kv := range resp.Kvs {
		m.applyPut(v, kv)
	}
	return v, resp.Header.Revision, nil
}

// follow applies the watch's events from revision rev on to v until the
// watch fails or ctx ends.
func (m *Member) follow(ctx context.Context, v *view, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := m.cfg.Client.Watch(wctx, m.keys.timeline+"/", clientv3.WithPrefix(), clientv3.WithRev(rev))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		backupChanged := false
		for _, ev := range wr.Events {
			switch ev.Type {
			case mvccpb.PUT:
				if m.applyPut(v, ev.Kv) {
					backupChanged = true
				}
			case mvccpb.DELETE:
				m.applyDelete(v, ev.Kv)
			}
		}
		m.show(v, backupChanged)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("watch channel closed")
}

// applyPut records kv in v and reports whether it set backup_lsn. Values
// that do not parse are logged and skipped.
func (m *Member) applyPut(v *view, kv *mvccpb.KeyValue) bool {
	key := string(kv.Key)
	rel, ok := strings.CutPrefix(key, m.keys.timeline+"/")
	if !ok {
		return false
	}
	switch {
	case strings.HasPrefix(rel, "nodes/"):
		var info NodeInfo
		if err := json.Unmarshal(kv.Value, &info); err != nil {
			m.log.Warn("ignoring an unreadable node key", zap.String("key", key), zap.Error(err))
			return false
		}
		info.Name = strings.TrimPrefix(rel, "nodes/") // the key is authoritative
		v.nodes[info.Name] = info
	case strings.HasPrefix(rel, "offloader/"):
		v.candidates[key] = candidacy{name: string(kv.Value), createRev: kv.CreateRevision}
	case rel == "backup_lsn":
		pos, err := parseBackupPos(string(kv.Value))
		if err != nil {
			m.log.Warn("ignoring an unreadable backup_lsn", zap.String("key", key), zap.Error(err))
			return false
		}
		v.backup, v.haveBackup = pos, true
		return true
	}
	return false
}

func (m *Member) applyDelete(v *view, kv *mvccpb.KeyValue) {
	key := string(kv.Key)
	rel, ok := strings.CutPrefix(key, m.keys.timeline+"/")
	if !ok {
		return
	}
	switch {
	case strings.HasPrefix(rel, "nodes/"):
		delete(v.nodes, strings.TrimPrefix(rel, "nodes/"))
	case strings.HasPrefix(rel, "offloader/"):
		delete(v.candidates, key)
	case rel == "backup_lsn":
		// Only by hand: keep the last position seen rather than
		// pretending nothing is archived.
		m.log.Warn("backup_lsn was deleted from etcd", zap.String("key", key))
	}
}

// show makes v the member's current view and passes backup_lsn to
// Local.AdoptBackup when adopt is set. A new shared position wakes the
// member's loops that read Local.Info (see viewChanged).
func (m *Member) show(v *view, adopt bool) {
	leader := v.leader()
	now := time.Now()
	m.mu.Lock()
	m.nodes = maps.Clone(v.nodes)
	if v.haveBackup && (!m.haveShared || m.shared != v.backup) {
		m.shared, m.haveShared = v.backup, true
		m.viewChanged.Notify()
	}
	changedTo := ""
	if leader != m.leader {
		m.leader = leader
		m.leaderSince = time.Time{}
		if leader != "" && leader == m.lastLeader {
			// The same leader after a gap (this node reconnected, or
			// the leader's candidacy was briefly absent): its term
			// is taken to go on.
			m.leaderSince = m.lastSince
		} else if leader != "" {
			changedTo = leader
			if m.lastLeader != "" && m.cfg.Metrics != nil {
				m.cfg.Metrics.LeaderChanges.WithLabelValues(m.tenantID, m.timelineID).Inc()
			}
			m.lastLeader, m.lastSince, m.leaderSince = leader, now, now
		}
	}
	m.mu.Unlock()
	if changedTo != "" {
		m.log.Info("offloader observed", zap.String("leader", changedTo))
	}
	if adopt && v.haveBackup {
		m.local.AdoptBackup(v.backup)
	}
}
