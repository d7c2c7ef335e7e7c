package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/election"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walfetch"
)

const clusterUsage = `usage: safekeeper cluster status        [--etcd ENDPOINTS | --safekeepers HOST:PORT,...] [flags]
       safekeeper cluster wait-replayed --standby CONNSTR [--lsn X/X | --etcd ... | --safekeepers ...] [flags]

status asks every safekeeper of the timeline for its durable end of WAL
(IDENTIFY_SYSTEM) and prints, per node, its timeline, flush position,
archived position and state; then the highest flush position among the
nodes that answered and whether they are a quorum: with
synchronous_standby_names = 'ANY K (...)' over N safekeepers, any N-K+1 of
them include one holding every acknowledged commit. Exit status 0 when
they are, 1 when not (do not promote then), 2 for usage errors.

wait-replayed waits until a standby has replayed that highest position (or
--lsn), or has received it and replayed every complete record before it
(the position may end inside a record the primary never finished): then
it holds every acknowledged commit and may be promoted. Exit status 0 when
replayed, 1 on timeout.

With --etcd the safekeepers are the live nodes the cluster publishes (a
node that is down is not listed: give --members N); with --safekeepers,
those listed.
`

// clusterCmdFlags are the flags of "safekeeper cluster".
type clusterCmdFlags struct {
	etcd        clusterFlags
	safekeepers string
	conninfo    string
	tenantID    string
	timelineID  string
	syncCount   int
	members     int
	jsonOut     bool
	timeout     time.Duration
	standby     string
	lsn         string
}

func clusterMain(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return clusterCmd(ctx, args, os.Stdout, os.Stderr)
}

func clusterCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "status" && args[0] != "wait-replayed") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			io.WriteString(stdout, clusterUsage)
			return 0
		}
		fmt.Fprint(stderr, "safekeeper cluster: want a subcommand: status or wait-replayed\nRun 'safekeeper cluster --help' for usage.\n")
		return 2
	}
	sub := args[0]
	var c clusterCmdFlags
	fs := flag.NewFlagSet("safekeeper cluster "+sub, flag.ContinueOnError)
	fs.StringVar(&c.etcd.endpoints, "etcd", "", "etcd endpoints (comma-separated): list the timeline's live safekeepers from there")
	fs.StringVar(&c.etcd.prefix, "etcd-prefix", "/safekeeper", "key prefix in etcd")
	fs.StringVar(&c.etcd.cacert, "etcd-cacert", "", "CA bundle (PEM) verifying etcd's certificates")
	fs.StringVar(&c.etcd.cert, "etcd-cert", "", "client certificate (PEM) for etcd")
	fs.StringVar(&c.etcd.key, "etcd-key", "", "private key (PEM) of --etcd-cert")
	fs.StringVar(&c.etcd.username, "etcd-user", "", "etcd user name")
	fs.StringVar(&c.etcd.password, "etcd-password", "", "etcd password (prefer SAFEKEEPER_ETCD_PASSWORD)")
	fs.StringVar(&c.safekeepers, "safekeepers", "", "comma-separated host:port of the safekeepers' replication listeners (instead of --etcd)")
	fs.StringVar(&c.conninfo, "safekeepers-conninfo", "", "extra libpq key=value settings for the connections to the safekeepers (user, sslmode, ...)")
	fs.StringVar(&c.tenantID, "tenant-id", "", "the timeline's tenant id (default: the only one)")
	fs.StringVar(&c.timelineID, "timeline-id", "", "the timeline id (default: the only one)")
	fs.IntVar(&c.syncCount, "sync-count", 0, "K of synchronous_standby_names = 'ANY K (...)' (default: a majority of the members)")
	fs.IntVar(&c.members, "members", 0, "N, the number of safekeepers in synchronous_standby_names (default: the nodes listed)")
	fs.BoolVar(&c.jsonOut, "json", false, "print JSON (status)")
	fs.DurationVar(&c.timeout, "timeout", 0, "give up after this long (default: 30s for status, 10m for wait-replayed)")
	if sub == "wait-replayed" {
		fs.StringVar(&c.standby, "standby", "", "connection string of the standby (a normal, not a replication, connection)")
		fs.StringVar(&c.lsn, "lsn", "", "wait for this position instead of the cluster's highest flush position")
	}
	if err := parseCommand(fs, clusterUsage, args[1:], stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		usageError(stderr, "cluster "+sub, err)
		return 2
	}
	if c.timeout == 0 {
		c.timeout = 30 * time.Second
		if sub == "wait-replayed" {
			c.timeout = 10 * time.Minute
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if sub == "wait-replayed" {
		return waitReplayed(ctx, c, stdout, stderr)
	}
	st, err := clusterStatus(ctx, c)
	if err != nil {
		if errors.Is(err, errClusterUsage) {
			usageError(stderr, "cluster status", err)
			return 2
		}
		fmt.Fprintln(stderr, "safekeeper cluster status:", err)
		return 1
	}
	if c.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	} else {
		st.print(stdout)
	}
	if !st.Quorum {
		return 1
	}
	return 0
}

// errClusterUsage marks a usage error found after parsing.
var errClusterUsage = errors.New("usage")

// clusterNode is one safekeeper in "cluster status".
type clusterNode struct {
	Name      string `json:"name,omitempty"`
	Addr      string `json:"addr"`
	Reachable bool   `json:"reachable"`
	State     string `json:"state"` // as published in etcd, or the error
	TLI       uint32 `json:"tli,omitempty"`
	FlushLSN  string `json:"flush_lsn,omitempty"`
	BackupLSN string `json:"backup_lsn,omitempty"`
	Offloader bool   `json:"offloader,omitempty"`
}

// clusterState is the output of "cluster status".
type clusterState struct {
	TenantID        string        `json:"tenant_id,omitempty"`
	TimelineID      string        `json:"timeline_id,omitempty"`
	Nodes           []clusterNode `json:"nodes"`
	HighestFlushLSN string        `json:"highest_flush_lsn,omitempty"`
	HighestTLI      uint32        `json:"highest_tli,omitempty"`
	HighestNode     string        `json:"highest_node,omitempty"`
	Answered        int           `json:"answered"`
	Members         int           `json:"members"`
	SyncCount       int           `json:"sync_count"`
	// Quorum: the nodes that answered include one holding every commit
	// the primary acknowledged (answered >= members - sync_count + 1).
	Quorum    bool   `json:"quorum"`
	SharedLSN string `json:"shared_backup_lsn,omitempty"`

	highest wal.LSN
}

func clusterStatus(ctx context.Context, c clusterCmdFlags) (*clusterState, error) {
	st := &clusterState{}
	var addrs []string
	published := map[string]election.NodeInfo{}
	switch {
	case c.etcd.endpoints != "" && c.safekeepers != "":
		return nil, fmt.Errorf("%w: give --etcd or --safekeepers, not both", errClusterUsage)
	case c.etcd.endpoints != "":
		for _, ep := range c.etcd.list() {
			if err := checkEndpoint(ep); err != nil {
				return nil, fmt.Errorf("%w: --etcd: %w", errClusterUsage, err)
			}
		}
		c.etcd.dialTimeout = 5 * time.Second
		cli, err := c.etcd.client(zap.NewNop())
		if err != nil {
			return nil, fmt.Errorf("%w: --etcd: %w", errClusterUsage, err)
		}
		defer closeWithin(cli, 2*time.Second)
		views, err := election.ReadViews(ctx, cli, c.etcd.prefix)
		if err != nil {
			return nil, err
		}
		var picked []election.View
		for _, v := range views {
			if (c.tenantID == "" || c.tenantID == v.TenantID) && (c.timelineID == "" || c.timelineID == v.TimelineID) {
				picked = append(picked, v)
			}
		}
		switch len(picked) {
		case 0:
			return nil, errors.New("no such timeline in etcd")
		case 1:
		default:
			return nil, fmt.Errorf("%w: etcd holds %d timelines; choose one with --tenant-id and --timeline-id", errClusterUsage, len(picked))
		}
		v := picked[0]
		st.TenantID, st.TimelineID = v.TenantID, v.TimelineID
		if v.Backup != nil {
			st.SharedLSN = v.Backup.LSN.String()
		}
		for _, n := range v.Nodes {
			addrs = append(addrs, n.Addr)
			published[n.Addr] = n
			st.Nodes = append(st.Nodes, clusterNode{Name: n.Name, Addr: n.Addr, State: n.State,
				BackupLSN: n.BackupLSN.String(), Offloader: n.Name == v.Leader})
		}
	case c.safekeepers != "":
		for _, a := range strings.Split(c.safekeepers, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
				st.Nodes = append(st.Nodes, clusterNode{Addr: a})
			}
		}
		st.TenantID, st.TimelineID = c.tenantID, c.timelineID
	default:
		return nil, fmt.Errorf("%w: give --etcd or --safekeepers", errClusterUsage)
	}
	src := &walfetch.SafekeeperSource{Addrs: addrs, ConnInfo: c.conninfo, TenantID: st.TenantID, TimelineID: st.TimelineID,
		ConnectTimeout: 5 * time.Second}
	states, err := src.Probe(ctx)
	if err != nil {
		return nil, err
	}
	for i, s := range states {
		n := &st.Nodes[i]
		switch {
		case s.Err != nil:
			n.State = "unreachable: " + firstLine(s.Err.Error())
		case s.NoWAL:
			n.Reachable, n.State = true, "no WAL yet"
			st.Answered++
		default:
			n.Reachable, n.TLI, n.FlushLSN = true, s.TLI, s.FlushLSN.String()
			if n.State == "" {
				n.State = "reachable"
			}
			st.Answered++
			if s.TLI > st.HighestTLI || (s.TLI == st.HighestTLI && s.FlushLSN > st.highest) {
				st.highest, st.HighestTLI, st.HighestNode = s.FlushLSN, s.TLI, n.Addr
				if n.Name != "" {
					st.HighestNode = n.Name
				}
			}
		}
	}
	if st.highest != 0 {
		st.HighestFlushLSN = st.highest.String()
	}
	st.Members = c.members
	if st.Members <= 0 {
		st.Members = len(st.Nodes)
	}
	st.SyncCount = c.syncCount
	if st.SyncCount <= 0 {
		st.SyncCount = st.Members/2 + 1
	}
	st.Quorum = st.highest != 0 && st.Answered >= st.Members-st.SyncCount+1
	return st, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.ReplaceAll(s, ":\n\t", ": "), "\n")
	return s
}

func (st *clusterState) print(w io.Writer) {
	if st.TenantID != "" {
		fmt.Fprintf(w, "timeline %s/%s\n", st.TenantID, st.TimelineID)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tTLI\tFLUSH_LSN\tBACKUP_LSN\tOFFLOADER\tSTATE")
	for _, n := range st.Nodes {
		tli, off := "", ""
		if n.TLI != 0 {
			tli = fmt.Sprint(n.TLI)
		}
		if n.Offloader {
			off = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", orDash(n.Name), n.Addr, orDash(tli), orDash(n.FlushLSN), orDash(n.BackupLSN), orDash(off), n.State)
	}
	tw.Flush()
	if st.HighestFlushLSN != "" {
		fmt.Fprintf(w, "highest flush position: %s on timeline %d (%s)\n", st.HighestFlushLSN, st.HighestTLI, st.HighestNode)
	} else {
		fmt.Fprintln(w, "highest flush position: unknown (no safekeeper answered with WAL)")
	}
	verdict := "a quorum: they include one holding every acknowledged commit"
	if !st.Quorum {
		verdict = "NOT a quorum: an acknowledged commit may be on the nodes that did not answer; do not promote"
	}
	fmt.Fprintf(w, "%d of %d answered, with ANY %d: %s\n", st.Answered, st.Members, st.SyncCount, verdict)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// waitReplayed waits until the standby's pg_last_wal_replay_lsn() reaches
// the target.
func waitReplayed(ctx context.Context, c clusterCmdFlags, stdout, stderr io.Writer) int {
	if c.standby == "" {
		usageError(stderr, "cluster wait-replayed", errors.New("--standby is required"))
		return 2
	}
	var target wal.LSN
	if c.lsn != "" {
		var err error
		if target, err = wal.ParseLSN(c.lsn); err != nil {
			usageError(stderr, "cluster wait-replayed", fmt.Errorf("--lsn: %w", err))
			return 2
		}
	} else {
		st, err := clusterStatus(ctx, c)
		if errors.Is(err, errClusterUsage) {
			usageError(stderr, "cluster wait-replayed", err)
			return 2
		}
		if err != nil {
			fmt.Fprintln(stderr, "safekeeper cluster wait-replayed:", err)
			return 1
		}
		if !st.Quorum {
			st.print(stderr)
			fmt.Fprintln(stderr, "safekeeper cluster wait-replayed: the safekeepers that answered are not a quorum; not waiting")
			return 1
		}
		target = st.highest
		fmt.Fprintf(stdout, "waiting for the standby to replay %s (highest flush position, on %s)\n", target, st.HighestNode)
	}
	// The highest flush position may end inside a record the primary was
	// still writing (never a commit it acknowledged): the standby then
	// replays up to the record before it. So the wait also ends once the
	// standby has received everything up to the target and its replay has
	// stood still for a while: it replayed every complete record.
	const settle = 2 * time.Second
	var last wal.LSN
	var lastChange time.Time
	for {
		replayed, received, err := standbyPositions(ctx, c.standby)
		if err == nil {
			if replayed != last || lastChange.IsZero() {
				last, lastChange = replayed, time.Now()
				fmt.Fprintf(stdout, "standby replayed %s, received %s, target %s\n", replayed, received, target)
			}
			if replayed >= target || (received >= target && time.Since(lastChange) >= settle) {
				fmt.Fprintf(stdout, "standby replayed %s: every acknowledged commit up to %s; it may be promoted\n", replayed, target)
				return 0
			}
		}
		select {
		case <-ctx.Done():
			msg := "timed out"
			if err != nil {
				msg += ": " + firstLine(err.Error())
			}
			fmt.Fprintf(stderr, "safekeeper cluster wait-replayed: %s at %s, waiting for %s\n", msg, last, target)
			return 1
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// standbyPositions returns a standby's replayed and received positions.
func standbyPositions(ctx context.Context, connString string) (replayed, received wal.LSN, err error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(cctx, connString)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(context.Background())
	res, err := conn.Exec(cctx, "SELECT pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn()").ReadAll()
	if err != nil {
		return 0, 0, err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || res[0].Rows[0][0] == nil {
		return 0, 0, errors.New("the server is not a standby (pg_last_wal_replay_lsn() is NULL)")
	}
	row := res[0].Rows[0]
	if replayed, err = wal.ParseLSN(string(row[0])); err != nil {
		return 0, 0, err
	}
	if row[1] != nil {
		if received, err = wal.ParseLSN(string(row[1])); err != nil {
			return 0, 0, err
		}
	}
	return replayed, received, nil
}
