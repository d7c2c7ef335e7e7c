package election

import (
	"context"
	"encoding/json"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// publish keeps the node's key, nodes/<name>, equal to Local.Info: put with
// the session's lease when the session starts and whenever Info changes,
// at most once per publishInterval. Between changes it waits on
// Local.Changed and the member's view with no timer. It ends the epoch
// (through end) when the lease is gone.
func (m *Member) publish(ctx context.Context, sess *concurrency.Session, end context.CancelCauseFunc) {
	key := m.keys.nodes + m.cfg.Name
	retry := backoff{min: retryMin, max: retryMax}
	var last NodeInfo // last published, UpdatedAt cleared
	published := false
	for {
		changed, viewChanged := m.local.Changed(), m.viewChanged.C() // before Info: a change after this wakes us
		info := m.localInfo()
		cmp := info
		cmp.UpdatedAt = time.Time{}
		if !published || cmp != last {
			if info.UpdatedAt.IsZero() {
				info.UpdatedAt = time.Now().UTC()
			}
			if err := m.putNode(ctx, key, info, sess.Lease()); err != nil {
				if ctx.Err() != nil {
					return
				}
				m.etcdFailed("publish node info", err)
				if leaseGone(err) {
					end(err)
					return
				}
				if !sleepCtx(ctx, retry.next()) {
					return
				}
				continue
			}
			m.etcdOK()
			retry.reset()
			last, published = cmp, true
			// Bound the rate; changes meanwhile are picked up below, as
			// changed is then closed already.
			if !sleepCtx(ctx, publishInterval) {
				return
			}
		}
		select {
		case <-changed:
		case <-viewChanged:
		case <-ctx.Done():
			return
		}
	}
}

func (m *Member) putNode(ctx context.Context, key string, info NodeInfo, lease clientv3.LeaseID) error {
	data, err := json.Marshal(info)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, m.cfg.opTimeout())
	defer cancel()
	_, err = m.cfg.Client.Put(pctx, key, string(data), clientv3.WithLease(lease))
	return err
}
