package election

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ErrLostLeadership is returned (wrapped) by Term.Advance when the term's
// election key is gone or belongs to another term: another node may lead,
// and nothing was written.
var ErrLostLeadership = errors.New("election: no longer the offloader")

// Term is one leadership term of a Member: from winning the election to
// resigning or losing the session. Its writes to etcd are fenced by the
// election key's create revision, so a term that ended (even if its holder
// has not noticed yet, e.g. after a long pause) cannot write.
type Term struct {
	m     *Member
	key   string // the leader's election key
	rev   int64  // its create revision
	start BackupPos
}

// Start returns the shared backup position read when the term began, in
// the same transaction that confirmed the leadership; the zero BackupPos
// when none was stored yet.
func (t *Term) Start() BackupPos { return t.start }

// Advance moves the shared backup_lsn forward to pos. The write is one
// transaction that requires the term's election key to exist at its create
// revision and backup_lsn to be what was just read (absent, or a lower
// value at a known mod revision), so it is never written by a former
// leader and never moves backwards. When another write raced it, it reads
// again and retries a few times. A pos not above the stored one returns
// nil without writing; when the term is over it returns an error wrapping
// ErrLostLeadership.
func (t *Term) Advance(ctx context.Context, pos BackupPos) error {
	m := t.m
	held := clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.rev)

	gctx, cancel := context.WithTimeout(ctx, m.cfg.opTimeout())
	resp, err := m.cfg.Client.Get(gctx, m.keys.backup)
	cancel()
	if err != nil {
		m.etcdFailed("read backup_lsn", err)
		return fmt.Errorf("election: read backup_lsn: %w", err)
	}
	cur, modRev, exists, err := backupFromKvs(resp.Kvs)
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		if exists && !cur.Less(pos) {
			return nil
		}
		if attempt > advanceAttempts {
			return fmt.Errorf("election: advance backup_lsn to %s: lost the race to other writes %d times", pos, advanceAttempts)
		}
		unchanged := clientv3.Compare(clientv3.CreateRevision(m.keys.backup), "=", 0)
		if exists {
			unchanged = clientv3.Compare(clientv3.ModRevision(m.keys.backup), "=", modRev)
		}
		tctx, cancel := context.WithTimeout(ctx, m.cfg.opTimeout())
		tresp, err := m.cfg.Client.Txn(tctx).
			If(held, unchanged).
			Then(clientv3.OpPut(m.keys.backup, pos.String())).
			Else(clientv3.OpGet(t.key), clientv3.OpGet(m.keys.backup)).
			Commit()
		cancel()
		if err != nil {
			m.etcdFailed("advance backup_lsn", err)
			return fmt.Errorf("election: advance backup_lsn to %s: %w", pos, err)
		}
		if tresp.Succeeded {
			m.log.Debug("advanced backup_lsn", zap.Stringer("from", cur), zap.Stringer("to", pos))
			return nil
		}
		if leader := tresp.Responses[0].GetResponseRange().Kvs; len(leader) == 0 || leader[0].CreateRevision != t.rev {
			return fmt.Errorf("%w: election key %s (created at revision %d) is gone; backup_lsn not advanced to %s",
				ErrLostLeadership, t.key, t.rev, pos)
		}
		cur, modRev, exists, err = backupFromKvs(tresp.Responses[1].GetResponseRange().Kvs)
		if err != nil {
			return err
		}
	}
}

// backupFromKvs decodes the result of a Get of backup_lsn: the position,
// its mod revision, and whether it exists.
func backupFromKvs(kvs []*mvccpb.KeyValue) (BackupPos, int64, bool, error) {
	if len(kvs) == 0 {
		return BackupPos{}, 0, false, nil
	}
	pos, err := parseBackupPos(string(kvs[0].Value))
	if err != nil {
		return BackupPos{}, 0, false, fmt.Errorf("election: stored backup_lsn %s: %w", kvs[0].Key, err)
	}
	return pos, kvs[0].ModRevision, true, nil
}
