package election

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// View is one timeline as etcd holds it, for operators' tools: the live
// nodes (their lease-bound keys), the elected offloader and the shared
// backup_lsn.
type View struct {
	TenantID, TimelineID string
	Nodes                []NodeInfo // sorted by name
	Leader               string     // "" when none
	Backup               *BackupPos // nil when none was stored
}

// ReadViews reads every timeline under prefix in one request.
func ReadViews(ctx context.Context, cli *clientv3.Client, prefix string) ([]View, error) {
	root := strings.TrimRight(prefix, "/") + "/timelines/"
	resp, err := cli.Get(ctx, root, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read %s from etcd: %w", root, err)
	}
	views := map[string]*View{}
	leaderRev := map[string]int64{}
	for _, kv := range resp.Kvs {
		parts := strings.SplitN(strings.TrimPrefix(string(kv.Key), root), "/", 4)
		if len(parts) < 3 {
			continue
		}
		id := parts[0] + "/" + parts[1]
		v := views[id]
		if v == nil {
			v = &View{TenantID: parts[0], TimelineID: parts[1]}
			views[id] = v
		}
		switch {
		case parts[2] == "nodes" && len(parts) == 4:
			var n NodeInfo
			if err := json.Unmarshal(kv.Value, &n); err != nil {
				return nil, fmt.Errorf("node key %s: %w", kv.Key, err)
			}
			v.Nodes = append(v.Nodes, n)
		case parts[2] == "offloader" && len(parts) == 4:
			// The oldest candidate leads.
			if r, ok := leaderRev[id]; !ok || kv.CreateRevision < r {
				leaderRev[id], v.Leader = kv.CreateRevision, string(kv.Value)
			}
		case parts[2] == "backup_lsn" && len(parts) == 3:
			pos, err := parseBackupPos(string(kv.Value))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", kv.Key, err)
			}
			v.Backup = &pos
		}
	}
	out := make([]View, 0, len(views))
	for _, v := range views {
		sort.Slice(v.Nodes, func(i, j int) bool { return v.Nodes[i].Name < v.Nodes[j].Name })
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].TenantID+out[i].TimelineID < out[j].TenantID+out[j].TimelineID
	})
	return out, nil
}
