package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/walfetch"
)

// Exit statuses of wal-fetch: the contract restore_command has with
// PostgreSQL.
const (
	fetchExitOK       = 0   // the file was written
	fetchExitNotFound = 1   // no source has it: PostgreSQL ends recovery (or streams)
	fetchExitFailed   = 126 // anything else: above 125, PostgreSQL aborts recovery
	// fetchExitUsage is for bad flags or arguments: a mistyped
	// restore_command must stop recovery, not end it (any status up to 125
	// reads as "no such file"), so it is above 125 too.
	fetchExitUsage = 126
)

const walFetchUsage = `usage: safekeeper wal-fetch [--archive URL] [--archive-s3-path-style]
         [--safekeepers host:port,...] [--safekeepers-conninfo 'key=value ...']
         [--tenant-id ID --timeline-id ID] [--user U] [--timeout D] %f %p

A restore_command: fetches the WAL file %f (a segment or a history file)
and writes it atomically to %p, for example

  restore_command = 'safekeeper wal-fetch --archive s3://bucket/wal --safekeepers sk1:5454,sk2:5454 %f %p'

Sources, in order: the archive (--archive), then the safekeepers
(--safekeepers), the one holding the most WAL first; at least one is
required. A segment that is not complete on any safekeeper is written as the
WAL the best one holds, followed by zeros.

Without --tenant-id/--timeline-id the archive must hold exactly one
timeline, and each safekeeper serves the only timeline it hosts.

Exit status: 0 written; 1 no source has the file (every source answered);
126 any other failure, after 3 attempts within --timeout, and usage errors
(PostgreSQL then aborts recovery rather than ending it early).

`

type walFetchFlags struct {
	archiveURL  string
	pathStyle   bool
	safekeepers string
	conninfo    string
	tenantID    string
	timelineID  string
	user        string
	timeout     time.Duration
	name, path  string // %f, %p
}

// parseWalFetchFlags parses the command line; flags may also follow the
// two arguments.
func parseWalFetchFlags(args []string, stderr io.Writer) (walFetchFlags, error) {
	var c walFetchFlags
	fs := flag.NewFlagSet("safekeeper wal-fetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.archiveURL, "archive", "", "WAL archive: file:///path or s3://bucket/prefix (S3 settings from the AWS environment and config files)")
	fs.BoolVar(&c.pathStyle, "archive-s3-path-style", false, "address the S3 bucket path-style (most S3-compatible servers need it)")
	fs.StringVar(&c.safekeepers, "safekeepers", "", "comma-separated host:port of safekeepers to fetch not yet archived WAL from")
	fs.StringVar(&c.conninfo, "safekeepers-conninfo", "", "extra libpq key=value settings for the safekeeper connections (sslmode=..., application_name=...)")
	fs.StringVar(&c.tenantID, "tenant-id", "", "tenant id (32 hex) of the timeline; default: the only one")
	fs.StringVar(&c.timelineID, "timeline-id", "", "timeline id (32 hex) of the timeline; default: the only one")
	fs.StringVar(&c.user, "user", "", "user for the safekeeper connections (default: PGUSER, else postgres)")
	fs.DurationVar(&c.timeout, "timeout", 60*time.Second, "give up (exit 126) after this long")
	if err := parseCommand(fs, walFetchUsage, args, stderr); err != nil {
		return c, err
	}
	var pos []string
	for rest := fs.Args(); len(rest) > 0; rest = fs.Args() {
		pos = append(pos, rest[0])
		if err := fs.Parse(rest[1:]); err != nil {
			return c, err
		}
	}
	if len(pos) != 2 {
		return c, fmt.Errorf("want two arguments, %%f and %%p; got %d", len(pos))
	}
	c.name, c.path = pos[0], pos[1]
	if c.name == "" || c.path == "" {
		return c, errors.New("%f and %p must not be empty")
	}
	if c.archiveURL == "" && c.safekeepers == "" {
		return c, errors.New("give --archive, --safekeepers or both")
	}
	if c.archiveURL != "" {
		if err := checkArchiveURL(c.archiveURL); err != nil {
			return c, err
		}
	}
	if (c.tenantID == "") != (c.timelineID == "") {
		return c, errors.New("give both --tenant-id and --timeline-id, or neither")
	}
	var err error
	if c.tenantID != "" {
		if c.tenantID, err = timeline.ParseHexID(c.tenantID); err != nil {
			return c, fmt.Errorf("--tenant-id: %w", err)
		}
		if c.timelineID, err = timeline.ParseHexID(c.timelineID); err != nil {
			return c, fmt.Errorf("--timeline-id: %w", err)
		}
	}
	if c.timeout <= 0 {
		return c, errors.New("--timeout must be positive")
	}
	return c, nil
}

// fetcher builds the sources the flags name.
func (c walFetchFlags) fetcher(ctx context.Context) (*walfetch.Fetcher, error) {
	f := &walfetch.Fetcher{}
	if c.archiveURL != "" {
		store, err := objstore.Open(ctx, c.archiveURL, objstore.Options{S3PathStyle: c.pathStyle})
		if err != nil {
			return nil, fmt.Errorf("--archive: %w", err)
		}
		f.Sources = append(f.Sources, &walfetch.ArchiveSource{Store: store, TenantID: c.tenantID, TimelineID: c.timelineID})
	}
	if c.safekeepers != "" {
		var addrs []string
		for _, a := range strings.Split(c.safekeepers, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) == 0 {
			return nil, errors.New("--safekeepers names no address")
		}
		f.Sources = append(f.Sources, &walfetch.SafekeeperSource{
			Addrs: addrs, ConnInfo: c.conninfo, User: c.user,
			TenantID: c.tenantID, TimelineID: c.timelineID,
			ConnectTimeout: min(10*time.Second, c.timeout),
		})
	}
	return f, nil
}

// checkArchiveURL catches an --archive that can never work (a usage
// error) before objstore.Open, whose other failures depend on the
// environment.
func checkArchiveURL(u string) error {
	if !strings.HasPrefix(u, "file://") && !strings.HasPrefix(u, "s3://") {
		return fmt.Errorf("--archive %q: want file:///path or s3://bucket[/prefix]", u)
	}
	return nil
}

func walFetchMain(args []string) int {
	return walFetch(args, os.Stderr)
}

func walFetch(args []string, stderr io.Writer) int {
	// One line per message: pgconn's errors span several.
	oneLine := strings.NewReplacer("\n\t", "; ", "\n", "; ")
	logf := func(format string, a ...any) {
		fmt.Fprintln(stderr, "safekeeper wal-fetch: "+oneLine.Replace(fmt.Sprintf(format, a...)))
	}
	c, err := parseWalFetchFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return fetchExitOK
	}
	if err != nil {
		logf("%v", err)
		return fetchExitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	f, err := c.fetcher(ctx)
	if err != nil {
		logf("%s: %v", c.name, err)
		return fetchExitFailed
	}
	f.Logf = logf
	start := time.Now()
	res, err := f.Fetch(ctx, c.name)
	if errors.Is(err, walfetch.ErrNotFound) {
		logf("%s: %v", c.name, err)
		return fetchExitNotFound
	}
	if err != nil {
		logf("%s: failed: %v", c.name, err)
		return fetchExitFailed
	}
	if err := walfetch.WriteFile(c.path, res.Data); err != nil {
		logf("%s: fetched from %s but not written to %s: %v", c.name, res.From, c.path, err)
		return fetchExitFailed
	}
	logf("%s: restored from %s to %s (%d bytes, %s)", c.name, res.From, c.path, len(res.Data), time.Since(start).Round(time.Millisecond))
	return fetchExitOK
}
