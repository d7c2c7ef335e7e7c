// Command safekeeper keeps a PostgreSQL primary's WAL durably and serves it
// over the streaming replication protocol. See the README for a tour.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffyaml"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/election"
	"github.com/pgsafekeeper/safekeeper/pkg/httpapi"
	"github.com/pgsafekeeper/safekeeper/pkg/manager"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/replconn"
	"github.com/pgsafekeeper/safekeeper/pkg/slots"
	"github.com/pgsafekeeper/safekeeper/pkg/supervisor"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/upstream"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
	"github.com/pgsafekeeper/safekeeper/pkg/walsender"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(realMain(os.Args[1:]))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: safekeeper <command> [flags]

commands:
  run         run the safekeeper
  passwd      set a user's password in a users file
  wal-fetch   restore_command: fetch a WAL file from the archive or the
              safekeepers
  wal-verify  check a WAL archive
  cluster status | wait-replayed
              the safekeepers' positions and quorum; wait for a standby to
              replay the highest (primary failover)
  version     print the version
  help [command]
              this text, or a command's flags (as: safekeeper <command> --help)

Every flag can also be set in the environment as SAFEKEEPER_<FLAG>, with
dashes as underscores: --data-dir is SAFEKEEPER_DATA_DIR.
`)
}

const runUsage = `usage: safekeeper run --data-dir DIR [--upstream CONNSTR] [flags]

Streams WAL from the upstream PostgreSQL primary, keeps it durably, serves
it over the streaming replication protocol, and archives it (README).
`

func realMain(args []string) int {
	if len(args) == 0 {
		usage(os.Stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return run(args[1:])
	case "passwd":
		return passwdMain(args[1:])
	case "wal-fetch":
		return walFetchMain(args[1:])
	case "wal-verify":
		return walVerifyMain(args[1:])
	case "cluster":
		return clusterMain(args[1:])
	case "version", "--version", "-V":
		fmt.Println("safekeeper", buildInfo())
		return 0
	case "help", "-h", "--help":
		if len(args) > 1 && args[1] != "help" && args[0] == "help" {
			return realMain([]string{args[1], "--help"})
		}
		usage(os.Stdout)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "safekeeper: unknown command %q\nRun 'safekeeper help' for the commands.\n", args[0])
		return 2
	}
}

// build describes this binary: the module version (a tag, a pseudo-version
// or "(devel)"), the VCS revision it was built from (with "+dirty" for
// uncommitted changes), and the Go version.
type build struct{ version, revision, goVersion string }

func buildInfo() build {
	b := build{version: version, revision: "unknown", goVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if version == "dev" && bi.Main.Version != "" {
		b.version = bi.Main.Version
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && b.revision != "unknown" {
		b.revision += "+dirty"
	}
	return b
}

func (b build) String() string {
	return fmt.Sprintf("%s (revision %s, %s)", b.version, b.revision, b.goVersion)
}

func buildVersion() string { return buildInfo().version }

// defaultName is --name's default.
const defaultName = "safekeeper"

type config struct {
	dataDir              string
	reserve              *walstore.Reserve // set by serve once the data directory is locked
	listenPG             string
	listenHTTP           string
	upstream             string
	upstreamSlot         string
	upstreamPasswordFile string
	name                 string
	startLSN             string
	walSenderTimeout     time.Duration
	logLevel             string
	logFormat            string
	tenantID             string
	timelineID           string
	security             securityConfig
	maxSlots             int
	maxSlotKeep          string
	archive              archiveFlags
	cluster              clusterFlags

	// Built from the flags by parseFlags.
	archiveCfg       *supervisor.ArchiveConfig
	walKeepBytes     uint64
	readyMaxLag      uint64
	readyMaxLagFlag  string
	walMemoryFlag    string
	walMemoryBytes   uint64
	maxSendFlag      string
	maxSendBytes     uint64
	walRefold        bool
	readyArchiveFail time.Duration
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("safekeeper run", flag.ContinueOnError)
	fs.StringVar(&c.dataDir, "data-dir", "", "data directory (required; created with mode 0700 if missing)")
	fs.StringVar(&c.listenPG, "listen-pg", "127.0.0.1:5454", "address for replication clients")
	fs.StringVar(&c.listenHTTP, "listen-http", "127.0.0.1:7676", "address for /v1/status, /metrics and /healthz")
	fs.StringVar(&c.upstream, "upstream", "", "connection string (libpq key=value or URL) of the primary to stream WAL from")
	fs.StringVar(&c.upstreamSlot, "upstream-slot", "", "physical replication slot to use on the primary, created when missing (default: --name made a valid slot name; none: no slot)")
	fs.StringVar(&c.upstreamPasswordFile, "upstream-password-file", "", "file holding the upstream password (keeps it out of ps and the environment); PGPASSFILE / ~/.pgpass work too")
	fs.StringVar(&c.name, "name", defaultName, "application_name used upstream (name it in synchronous_standby_names)")
	fs.StringVar(&c.startLSN, "start-lsn", "", "on first start, stream from the segment holding this LSN (X/X) instead of the primary's current position")
	fs.DurationVar(&c.walSenderTimeout, "wal-sender-timeout", 60*time.Second, "drop consumers silent this long; keepalives at half of it (0 disables)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "console", "console or json")
	fs.StringVar(&c.tenantID, "tenant-id", "", "tenant id (32 hex) of the hosted timeline; default: the existing one, else derived from the upstream's system identifier (README)")
	fs.StringVar(&c.timelineID, "timeline-id", "", "timeline id (32 hex) of the hosted timeline; default: the existing one, else derived from the upstream's system identifier (README)")
	fs.IntVar(&c.maxSlots, "max-replication-slots", 10, "most replication slots the safekeeper holds")
	fs.StringVar(&c.maxSlotKeep, "max-slot-wal-keep-size", "0", "most WAL a slot may hold back (e.g. 10GB); a slot further behind is reported lost; 0 = unlimited")
	fs.StringVar(&c.maxSendFlag, "max-send-size", "1MB", "most WAL in one XLogData message to a consumer, a multiple of 8kB up to 1MB (PostgreSQL's walsender sends 128kB; 1MB measured faster for pg_receivewal and a standby catching up, docs/performance.md)")
	fs.StringVar(&c.walMemoryFlag, "wal-memory-size", "64MB", "most recent durable WAL kept in memory per timeline, from which consumers that keep up are served (0 disables); allocated as WAL arrives, released when the timeline is idle")
	fs.BoolVar(&c.walRefold, "wal-refold", true, "read each finished segment back into the page cache in 2 MiB folios, so that consumers served from files cost one copy instead of two (one disk read per segment; docs/performance.md)")
	fs.StringVar(&c.readyMaxLagFlag, "ready-max-lag", "64MB", "GET /readyz answers 503 while the node is further behind the upstream's end of WAL (0 = no limit)")
	fs.DurationVar(&c.readyArchiveFail, "ready-archive-fail-for", 5*time.Minute, "GET /readyz answers 503 once archive operations have failed for this long in a row (0 = never)")
	registerSecurityFlags(fs, &c.security)
	registerArchiveFlags(fs, &c.archive)
	registerClusterFlags(fs, &c.cluster)
	fs.String("config", "", "YAML file of settings, keys named as the flags (data-dir: /var/lib/safekeeper); flags and SAFEKEEPER_* variables override it")
	if err := parseCommand(fs, runUsage, args, os.Stdout,
		ff.WithConfigFileFlag("config"), ff.WithConfigFileParser(ffyaml.Parser)); err != nil {
		return c, err
	}
	var err error
	if c.readyMaxLag, err = parseSize(c.readyMaxLagFlag); err != nil {
		return c, fmt.Errorf("--ready-max-lag: %w", err)
	}
	if c.walMemoryBytes, err = parseSize(c.walMemoryFlag); err != nil {
		return c, fmt.Errorf("--wal-memory-size: %w", err)
	}
	if c.maxSendBytes, err = parseSize(c.maxSendFlag); err != nil {
		return c, fmt.Errorf("--max-send-size: %w", err)
	}
	if c.maxSendBytes < 8<<10 || c.maxSendBytes > walsender.MaxSendSizeLimit || c.maxSendBytes%(8<<10) != 0 {
		return c, fmt.Errorf("--max-send-size: %s is not a multiple of 8kB between 8kB and 1MB", c.maxSendFlag)
	}
	if c.upstream != "" {
		if _, err := pgconn.ParseConfig(c.upstream); err != nil {
			return c, fmt.Errorf("--upstream: %w", err)
		}
	}
	if c.upstreamPasswordFile != "" {
		if _, err := os.ReadFile(c.upstreamPasswordFile); err != nil {
			return c, fmt.Errorf("--upstream-password-file: %w", err)
		}
	}
	if err := c.cluster.validate(c.listenPG, c.name); err != nil {
		return c, err
	}
	if c.archiveCfg, c.walKeepBytes, err = c.archive.open(context.Background()); err != nil {
		return c, err
	}
	if c.dataDir == "" {
		return c, errors.New("--data-dir is required")
	}
	if c.logFormat != "console" && c.logFormat != "json" {
		return c, fmt.Errorf("--log-format must be console or json, not %q", c.logFormat)
	}
	return c, nil
}

func newLogger(level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	var cfg zap.Config
	if format == "json" {
		cfg = zap.NewProductionConfig()
	} else {
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg.Build()
}

func run(args []string) int {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		usageError(os.Stderr, "run", err)
		return 2
	}
	log, err := newLogger(cfg.logLevel, cfg.logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "safekeeper:", err)
		return 2
	}
	defer log.Sync()
	if err := serve(cfg, log); err != nil {
		var ce configError
		if errors.As(err, &ce) {
			// A configuration error found before anything listens: one
			// line, exit status 2, as for a bad flag.
			fmt.Fprintln(os.Stderr, "safekeeper:", err)
			return 2
		}
		log.Error("safekeeper stopped", zap.Error(err))
		return 1
	}
	return 0
}

// configError marks an error in the configuration (a file named by a
// flag that cannot be used), found before the process listens.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

// localTimelineID finds the timeline to host without asking anyone: the
// existing one matching the ids given, or the ids given. known is false
// when a new timeline lacks an id: identifyTimeline derives it from the
// upstream's system identifier (timeline.IDFromSystemID), so that every
// safekeeper of one primary agrees on it.
func localTimelineID(cfg config) (id timeline.ID, known bool, err error) {
	if cfg.tenantID != "" {
		if id.TenantID, err = timeline.ParseHexID(cfg.tenantID); err != nil {
			return id, false, fmt.Errorf("--tenant-id: %w", err)
		}
	}
	if cfg.timelineID != "" {
		if id.TimelineID, err = timeline.ParseHexID(cfg.timelineID); err != nil {
			return id, false, fmt.Errorf("--timeline-id: %w", err)
		}
	}
	existing, _ := filepath.Glob(filepath.Join(cfg.dataDir, "*", "*", walstore.ControlFileName))
	var found []timeline.ID
	for _, p := range existing {
		tlDir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(tlDir, manager.DefinitionFile)); err == nil {
			continue // defined through the HTTP API, not by the command line
		}
		t, err1 := timeline.ParseHexID(filepath.Base(filepath.Dir(tlDir)))
		l, err2 := timeline.ParseHexID(filepath.Base(tlDir))
		if err1 == nil && err2 == nil {
			found = append(found, timeline.ID{TenantID: t, TimelineID: l})
		}
	}
	for _, f := range found {
		if (id.TenantID == "" || id.TenantID == f.TenantID) && (id.TimelineID == "" || id.TimelineID == f.TimelineID) {
			return f, true, nil
		}
	}
	if len(found) > 0 && id.TenantID == "" && id.TimelineID == "" {
		return found[0], true, nil
	}
	if id.TenantID != "" && id.TimelineID != "" {
		return id, true, nil
	}
	if cfg.upstream == "" && (id.TenantID != "" || id.TimelineID != "") {
		return id, false, errors.New("--tenant-id and --timeline-id go together for a timeline without --upstream")
	}
	// Without --upstream and without ids the command line defines no
	// timeline: the process hosts what the data directory and the HTTP
	// API define.
	return id, false, nil
}

// pendingReason is the last error asking the upstream for its system
// identifier, for /readyz while no timeline is hosted.
type pendingReason struct{ v atomic.Pointer[string] }

func (p *pendingReason) set(s string) { p.v.Store(&s) }

func (p *pendingReason) get() string {
	if s := p.v.Load(); s != nil {
		return *s
	}
	return ""
}

// identifyTimeline fills the ids id lacks from the upstream's system
// identifier.
func identifyTimeline(ctx context.Context, cfg config, id timeline.ID, log *zap.Logger, pending *pendingReason) (timeline.ID, error) {
	sysid, err := identifyUpstream(ctx, cfg, log, pending)
	if err != nil {
		return id, err
	}
	derived := timeline.IDFromSystemID(sysid)
	if id.TenantID == "" {
		id.TenantID = derived.TenantID
	}
	if id.TimelineID == "" {
		id.TimelineID = derived.TimelineID
	}
	log.Info("new timeline: ids derived from the upstream's system identifier",
		zap.Uint64("system_id", sysid), zap.String("tenant_id", id.TenantID), zap.String("timeline_id", id.TimelineID))
	return id, nil
}

// identifyUpstream asks the upstream for its system identifier, retrying
// with backoff until it answers or ctx ends.
func identifyUpstream(ctx context.Context, cfg config, log *zap.Logger, pending *pendingReason) (uint64, error) {
	backoff := 200 * time.Millisecond
	for {
		sysid, err := func() (uint64, error) {
			conn, err := upstream.Dial(ctx, cfg.upstream, cfg.name, cfg.upstreamPasswordFile)
			if err != nil {
				return 0, err
			}
			defer conn.Close(context.Background())
			id, err := replconn.IdentifySystem(ctx, conn)
			return id.SystemID, err
		}()
		if err == nil {
			return sysid, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		pending.set(upstream.OneLine(err))
		log.Warn("waiting for the upstream to learn its system identifier (the default tenant and timeline ids derive from it)",
			zap.String("error", upstream.OneLine(err)), zap.Duration("backoff", backoff))
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func serve(cfg config, log *zap.Logger) error {
	if err := os.MkdirAll(cfg.dataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	walstore.SetRefold(cfg.walRefold)
	lock, err := walstore.Lock(cfg.dataDir)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	cfg.reserve = walstore.NewReserve(cfg.dataDir, walstore.DefaultReserveSize)
	if err := cfg.reserve.Ensure(); err != nil {
		// A full disk at start: serve what is held; the reserve is
		// created again once ingest finds room.
		log.Warn("cannot create the emergency space reserve", zap.Error(err))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log = log.With(zap.String("node", cfg.name))
	id, known, err := localTimelineID(cfg)
	if err != nil {
		return err
	}
	flagDef := flagDefinition(cfg, id)
	if _, err := timelineConfig(cfg, flagDef); err != nil {
		return err // flag errors, before anything listens
	}
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(promReg)
	bi := buildInfo()
	metrics.RegisterBuildInfo(promReg, bi.version, bi.revision, bi.goVersion)
	var cluster *supervisor.ClusterConfig
	var electionMetrics *election.Metrics
	if cfg.cluster.endpoints != "" {
		cli, err := cfg.cluster.client(log)
		if err != nil {
			return configError{fmt.Errorf("--etcd: %w", err)}
		}
		defer closeWithin(cli, 2*time.Second)
		cc := cfg.cluster.clusterConfig(cli, cfg.name)
		if host, _, _ := net.SplitHostPort(cc.Addr); host == "localhost" || net.ParseIP(host).IsLoopback() {
			log.Warn("peers reach this node at a loopback address (--advertise-pg); fine on one machine only", zap.String("advertise_pg", cc.Addr))
		}
		cluster, electionMetrics = &cc, election.NewMetrics(promReg)
	}
	// A few percent of the kernel's default vm.max_map_count (65530):
	// each kept mapping of a segment is one entry of the process's map.
	keptMaps := walreader.NewMapBudget(2048)
	open := func(def manager.Definition, dir string) (*supervisor.Supervisor, error) {
		tlCfg, err := timelineConfig(cfg, def)
		if err != nil {
			return nil, err
		}
		tlCfg.Dir = dir
		tlCfg.Cluster, tlCfg.ElectionMetrics = cluster, electionMetrics
		tlCfg.KeptMaps = keptMaps
		return supervisor.Open(tlCfg, log, m)
	}

	pending := &pendingReason{}
	reg := supervisor.NewRegistry()
	mcfg := manager.Config{DataDir: cfg.dataDir, Open: open}
	if a := cfg.archiveCfg; a != nil {
		mcfg.DeleteArchive = func(ctx context.Context, id timeline.ID) (int, error) {
			ar, err := archive.New(a.Store, id.TenantID, id.TimelineID, a.Compression)
			if err != nil {
				return 0, err
			}
			return ar.DeleteAll(ctx)
		}
	}
	mgr := manager.New(mcfg, reg, log)
	defs, err := mgr.Scan()
	if err != nil {
		return fmt.Errorf("scan data directory: %w", err)
	}
	// The timeline the command line defines replaces what is stored for
	// it. When it is already on disk or named by the flags, it is opened
	// before anything listens: a failure to open it ends the process at
	// once, as a bad flag would.
	pre := map[timeline.ID]*supervisor.Supervisor{}
	if known {
		defs = slices.DeleteFunc(defs, func(d manager.Definition) bool { return d.ID() == id })
		defs = append(defs, flagDef)
		sup, err := open(flagDef, mgr.Dir(id))
		if err != nil {
			return err
		}
		pre[id] = sup
	}
	closePre := func() {
		for _, s := range pre {
			s.Close()
		}
	}
	promReg.MustRegister(metrics.NewTimelineCollector(func() []metrics.TimelineSample {
		var out []metrics.TimelineSample
		for _, t := range reg.All() {
			out = append(out, t.MetricsSample())
		}
		return out
	}))
	promReg.MustRegister(metrics.NewConsumerCollector(func() []metrics.ConsumerSample {
		var out []metrics.ConsumerSample
		for _, t := range reg.All() {
			out = append(out, t.ConsumerSamples()...)
		}
		return out
	}))
	promReg.MustRegister(metrics.NewSlotCollector(func() []metrics.SlotSample {
		var out []metrics.SlotSample
		for _, t := range reg.All() {
			id := t.ID()
			for _, s := range t.Slots().List() {
				out = append(out, metrics.SlotSample{TenantID: id.TenantID, TimelineID: id.TimelineID,
					Name: s.Name, Lost: s.WALStatus == "lost", BehindBytes: s.BehindBytes})
			}
		}
		return out
	}))

	wcfg := walsender.Config{WalSenderTimeout: cfg.walSenderTimeout, MaxSendSize: int(cfg.maxSendBytes)}
	if err := applySecurity(cfg.security, &wcfg); err != nil {
		closePre()
		return configError{err}
	}
	pgLn, err := net.Listen("tcp", cfg.listenPG)
	if err != nil {
		closePre()
		return fmt.Errorf("listen on %s: %w", cfg.listenPG, err)
	}
	httpLn, err := net.Listen("tcp", cfg.listenHTTP)
	if err != nil {
		pgLn.Close()
		closePre()
		return fmt.Errorf("listen on %s: %w", cfg.listenHTTP, err)
	}

	// The timelines outlive the listeners: they stop after the walsender
	// has taken its consumers through the shutdown sequence. They are
	// hosted before either listener serves, so the API never lists fewer
	// timelines than the data directory holds (hosting only registers
	// each one; opening runs in its own goroutine).
	mgrCtx, stopTimelines := context.WithCancel(context.Background())
	defer stopTimelines()
	mgr.Start(mgrCtx, defs, pre)

	httpSrv := &http.Server{Handler: httpapi.Handler(httpapi.Config{
		Node: cfg.name, Version: buildVersion(), Registry: reg, Timelines: mgr, Gatherer: promReg,
		Ready: httpapi.Readiness{MaxLag: cfg.readyMaxLag, ArchiveFailFor: cfg.readyArchiveFail, Pending: pending.get,
			NoTimelineOK: cfg.upstream == ""},
		Tokens: httpTokens(cfg.security), Log: log.Named("http"),
	}), ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := httpSrv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", zap.Error(err))
		}
	}()
	srv := walsender.New(wcfg, resolver{reg}, log.Named("walsender"), m)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx, pgLn); err != nil {
			log.Error("replication listener", zap.Error(err))
		}
	}()
	log.Info("safekeeper started",
		zap.String("version", buildVersion()), zap.String("data_dir", cfg.dataDir),
		zap.String("listen_pg", pgLn.Addr().String()), zap.String("listen_http", httpLn.Addr().String()),
		zap.Int("timelines", len(defs)))
	fatal := make(chan error, 1) // a failure that must end the process
	if !known && cfg.upstream != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A new timeline without ids: they derive from the upstream's
			// system identifier, which may take a while to learn.
			id, err := identifyTimeline(ctx, cfg, id, log, pending)
			if err == nil {
				err = mgr.Host(flagDefinition(cfg, id))
			}
			if err != nil && ctx.Err() == nil {
				fatal <- err
				stop()
			}
		}()
	}

	<-ctx.Done()
	log.Info("shutting down")
	shCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shCtx)
	wg.Wait()
	mgr.Stop()
	select {
	case err := <-fatal:
		return err
	default:
	}
	log.Info("shut down cleanly")
	return nil
}

// flagDefinition is the timeline the command line defines: --upstream and
// its options (none without --upstream).
func flagDefinition(cfg config, id timeline.ID) manager.Definition {
	d := manager.Definition{TenantID: id.TenantID, TimelineID: id.TimelineID, FromFlags: true}
	if cfg.upstream != "" {
		d.Upstream = &manager.Upstream{ConnInfo: cfg.upstream, Slot: cfg.upstreamSlot, PasswordFile: cfg.upstreamPasswordFile, StartLSN: cfg.startLSN}
	}
	return d
}

// timelineConfig turns a timeline's definition and the process-wide flags
// into the timeline's configuration.
func timelineConfig(cfg config, def manager.Definition) (supervisor.Config, error) {
	var c supervisor.Config
	keep, err := parseSize(cfg.maxSlotKeep)
	if err != nil {
		return c, fmt.Errorf("--max-slot-wal-keep-size: %w", err)
	}
	id := def.ID()
	c = supervisor.Config{
		Dir:            filepath.Join(cfg.dataDir, id.TenantID, id.TimelineID),
		ID:             id,
		NodeName:       cfg.name,
		Slots:          slots.Limits{MaxSlots: cfg.maxSlots, MaxKeepBytes: keep},
		Archive:        cfg.archiveCfg,
		WalKeepBytes:   cfg.walKeepBytes,
		WalMemoryBytes: cfg.walMemoryBytes,
	}
	if u := def.Upstream; u != nil {
		var startLSN wal.LSN
		if u.StartLSN != "" {
			if startLSN, err = wal.ParseLSN(u.StartLSN); err != nil {
				return c, fmt.Errorf("--start-lsn: %w", err)
			}
		}
		slot := u.Slot
		switch slot {
		case "":
			slot = upstream.SlotName(cfg.name)
		case "none":
			slot = ""
		}
		c.Upstream = &upstream.Config{
			ConnString: u.ConnInfo, PasswordFile: u.PasswordFile, Slot: slot, ApplicationName: cfg.name, StartLSN: startLSN,
		}
		if cfg.reserve != nil {
			c.Upstream.Space = cfg.reserve
		}
	}
	return c, nil
}

// resolver finds hosted timelines for the walsender.
type resolver struct{ reg *supervisor.Registry }

func target(s *supervisor.Supervisor) walsender.Target {
	return walsender.Target{WAL: s, Slots: s.Slots(), Consumers: s.Consumers(), Metrics: s.Metrics()}
}

func (r resolver) Lookup(id timeline.ID) (walsender.Target, bool) {
	s, ok := r.reg.Get(id)
	if !ok {
		return walsender.Target{}, false
	}
	return target(s), true
}

// Count returns how many timelines are hosted.
func (r resolver) Count() int { return len(r.reg.All()) }

func (r resolver) Only() (walsender.Target, bool) {
	s, ok := r.reg.Only()
	if !ok {
		return walsender.Target{}, false
	}
	return target(s), true
}

// parseSize parses a byte size such as "0", "512MB", "10GB" or "1TB"
// (units as in postgresql.conf: kB, MB, GB, TB; a bare number is MB).
func parseSize(v string) (uint64, error) {
	v = strings.TrimSpace(v)
	units := []struct {
		suffix string
		mult   uint64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"B", 1}}
	mult := uint64(1 << 20)
	for _, u := range units {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSpace(strings.TrimSuffix(v, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q", v)
	}
	return n * mult, nil
}
