package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/walverify"
)

// Exit statuses of wal-verify.
const (
	verifyExitClean      = 0 // no problem found
	verifyExitProblems   = 1 // the report lists problems
	verifyExitUsage      = 2 // bad flags or arguments
	verifyExitUnreadable = 3 // the archive could not be read at all
)

const walVerifyUsage = `usage: safekeeper wal-verify --archive URL [--archive-s3-path-style]
         [--tenant-id ID --timeline-id ID] [--concurrency N]

Checks the WAL archive of every timeline in it (or of the one named): counts
segments, lists history files, and reports gaps in the segment sequence,
segments stored twice, keys that are not WAL, timelines without their history
file, and every object whose checksum, size, system identifier or segment size
does not verify (each object is downloaded). The report goes to standard
output.

Exit status: 0 no problem found; 1 problems found; 2 usage errors; 3 the
archive could not be read at all.

`

func walVerifyMain(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return walVerify(ctx, args, os.Stdout, os.Stderr)
}

func walVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("safekeeper wal-verify", flag.ContinueOnError)
	archiveURL := fs.String("archive", "", "WAL archive: file:///path or s3://bucket/prefix (S3 settings from the AWS environment and config files)")
	pathStyle := fs.Bool("archive-s3-path-style", false, "address the S3 bucket path-style (most S3-compatible servers need it)")
	tenantID := fs.String("tenant-id", "", "tenant id (32 hex) of the timeline to check; default: every timeline")
	timelineID := fs.String("timeline-id", "", "timeline id (32 hex) of the timeline to check; default: every timeline")
	concurrency := fs.Int("concurrency", walverify.DefaultConcurrency, "objects downloaded and checked at once")
	usageErr := func(err error) int {
		fmt.Fprintln(stderr, "safekeeper wal-verify:", err)
		return verifyExitUsage
	}
	if err := parseCommand(fs, walVerifyUsage, args, stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return verifyExitClean
		}
		usageError(stderr, "wal-verify", err)
		return verifyExitUsage
	}
	if fs.NArg() > 0 {
		return usageErr(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if *archiveURL == "" {
		return usageErr(errors.New("--archive is required"))
	}
	if err := checkArchiveURL(*archiveURL); err != nil {
		return usageErr(err)
	}
	if (*tenantID == "") != (*timelineID == "") {
		return usageErr(errors.New("give both --tenant-id and --timeline-id, or neither"))
	}
	if *concurrency < 1 {
		return usageErr(errors.New("--concurrency must be at least 1"))
	}
	var pairs [][2]string
	if *tenantID != "" {
		t, err := timeline.ParseHexID(*tenantID)
		if err != nil {
			return usageErr(fmt.Errorf("--tenant-id: %w", err))
		}
		l, err := timeline.ParseHexID(*timelineID)
		if err != nil {
			return usageErr(fmt.Errorf("--timeline-id: %w", err))
		}
		pairs = [][2]string{{t, l}}
	}
	unreadable := func(err error) int {
		fmt.Fprintln(stderr, "safekeeper wal-verify: cannot read the archive:", err)
		return verifyExitUnreadable
	}
	store, err := objstore.Open(ctx, *archiveURL, objstore.Options{S3PathStyle: *pathStyle})
	if err != nil {
		return unreadable(err)
	}
	if pairs == nil {
		if pairs, err = walverify.Timelines(ctx, store); err != nil {
			return unreadable(fmt.Errorf("list the timelines in %s: %w", store, err))
		}
		if len(pairs) == 0 {
			fmt.Fprintf(stdout, "%s holds no WAL\n", store)
			return verifyExitProblems
		}
	}
	problems := 0
	for i, p := range pairs {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		r, err := walverify.Verify(ctx, store, p[0], p[1], walverify.Options{Concurrency: *concurrency})
		if err != nil {
			return unreadable(err)
		}
		r.Write(stdout)
		problems += r.Problems()
	}
	if ctx.Err() != nil {
		return unreadable(ctx.Err())
	}
	fmt.Fprintf(stdout, "\n%d timeline%s checked, %d problem%s\n", len(pairs), pluralS(len(pairs)), problems, pluralS(problems))
	if problems > 0 {
		return verifyExitProblems
	}
	return verifyExitClean
}

func pluralS(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
