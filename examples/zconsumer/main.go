// Command zconsumer follows one timeline of a safekeeper the way a Neon
// pageserver does, to show (and test) how pageserver-style consumers hold
// the safekeeper's local WAL.
//
// It opens a physical replication connection with pgconn, naming the
// timeline in the startup options ("-c tenant_id=<hex> timeline_id=<hex>"),
// runs IDENTIFY_SYSTEM and SHOW wal_segment_size, and streams with
// START_REPLICATION PHYSICAL <pos> TIMELINE <tli> from the position saved in
// its state file (or, on the first run, from the start of the segment
// holding the server's current end of WAL). Received WAL is appended to
// PostgreSQL-named segment files in --dir ("<segment>.partial" while it is
// being filled), so the result can be compared byte for byte with the
// primary's pg_wal.
//
// Every --feedback-interval (and whenever a keepalive asks for a reply) it
// fsyncs what it received, saves the durable position in the state file
// (atomically: temporary file, fsync, rename, fsync of the directory), and
// then sends Neon's pageserver feedback ('z', encoded with pkg/feedback):
//
//	last_received_lsn     (ps_writelsn)  end of the WAL received
//	disk_consistent_lsn   (ps_flushlsn)  end of the WAL durable in --dir
//	remote_consistent_lsn (ps_applylsn)  what it considers "uploaded":
//	                                     --hold-at if given, else the durable
//	                                     end minus --upload-lag; never past
//	                                     the durable end
//	ps_replytime                         now
//
// The safekeeper keeps its local WAL from the remote_consistent_lsn of
// every connected 'z' consumer on; when the consumer disconnects, that hold
// goes away. A real pageserver reports as remote_consistent_lsn what it has
// uploaded to object storage; --hold-at pins it to show the hold.
//
// It reconnects with exponential backoff (100 ms doubling up to
// --reconnect-max) after any connection or server error, except those that
// cannot heal by retrying (authentication failures, invalid options, WAL
// the server no longer has: SQLSTATE 58P01), and follows timeline switches
// as pg_receivewal does. SIGINT or SIGTERM stops it cleanly: the received
// WAL is fsynced, the position saved, a last feedback sent (when
// streaming), exit status 0.
//
// Usage:
//
//	zconsumer --conn 'host=127.0.0.1 port=5454 user=postgres' \
//	    --tenant-id <32 hex> --timeline-id <32 hex> --dir /var/lib/zconsumer
//
// See README.md in this directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// config is the parsed command line.
type config struct {
	conn             string
	tenantID         string
	timelineID       string
	appName          string
	dir              string
	feedbackInterval time.Duration
	uploadLag        uint64
	holdAt           wal.LSN
	hasHoldAt        bool
	reconnectMax     time.Duration
	logLevel         slog.Level
}

func parseFlags(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("zconsumer", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.conn, "conn", "host=127.0.0.1 port=5454 user=postgres", "libpq connection string of the safekeeper (replication=true and options are added)")
	fs.StringVar(&c.tenantID, "tenant-id", "", "tenant id, 32 hex digits (required)")
	fs.StringVar(&c.timelineID, "timeline-id", "", "timeline id, 32 hex digits (required)")
	fs.StringVar(&c.appName, "application-name", "zconsumer", "application_name; the safekeeper's status and held_by show it")
	fs.StringVar(&c.dir, "dir", "", "directory for the WAL segments and the state file (required)")
	fs.DurationVar(&c.feedbackInterval, "feedback-interval", time.Second, "how often to make received WAL durable and send 'z' feedback")
	fs.Uint64Var(&c.uploadLag, "upload-lag", 0, "report remote_consistent_lsn this many bytes behind the durable end (ignored with --hold-at)")
	holdAt := fs.String("hold-at", "", "pin remote_consistent_lsn at this LSN (X/X), capped at the durable end")
	fs.DurationVar(&c.reconnectMax, "reconnect-max", 10*time.Second, "longest wait between reconnection attempts")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if !isHexID(c.tenantID) || !isHexID(c.timelineID) {
		return c, errors.New("--tenant-id and --timeline-id are required, 32 hex digits each")
	}
	if c.dir == "" {
		return c, errors.New("--dir is required")
	}
	if c.feedbackInterval <= 0 || c.reconnectMax <= 0 {
		return c, errors.New("--feedback-interval and --reconnect-max must be positive")
	}
	if *holdAt != "" {
		lsn, err := wal.ParseLSN(*holdAt)
		if err != nil {
			return c, fmt.Errorf("--hold-at: %w", err)
		}
		c.holdAt, c.hasHoldAt = lsn, true
	}
	if err := c.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return c, fmt.Errorf("--log-level: %w", err)
	}
	return c, nil
}

func isHexID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F') {
			return false
		}
	}
	return true
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "zconsumer:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("stopped", "err", err)
		os.Exit(1)
	}
}
