package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/offload"
	"github.com/pgsafekeeper/safekeeper/pkg/supervisor"
)

// archiveFlags are the flags of the WAL archive and of local retention.
type archiveFlags struct {
	url         string
	pathStyle   bool
	compression string
	concurrency int
	walKeepSize string
}

func registerArchiveFlags(fs *flag.FlagSet, c *archiveFlags) {
	fs.StringVar(&c.url, "archive", "", "WAL archive: file:///path or s3://bucket/prefix (S3 settings from the AWS environment and config files); empty = no archive")
	fs.BoolVar(&c.pathStyle, "archive-s3-path-style", false, "address the S3 bucket path-style (most S3-compatible servers need it)")
	fs.StringVar(&c.compression, "archive-compression", "zstd", "compression of archived segments: zstd or none")
	fs.IntVar(&c.concurrency, "archive-upload-concurrency", 4, "segments uploaded at once")
	fs.StringVar(&c.walKeepSize, "wal-keep-size", "0", "WAL kept locally behind the end of WAL whatever else releases it (e.g. 1GB), as PostgreSQL's wal_keep_size")
}

// validate checks the archive flags and opens the store (which does no I/O).
func (c archiveFlags) open(ctx context.Context) (*supervisor.ArchiveConfig, uint64, error) {
	keep, err := parseSize(c.walKeepSize)
	if err != nil {
		return nil, 0, fmt.Errorf("--wal-keep-size: %w", err)
	}
	comp, err := archive.ParseCompression(c.compression)
	if err != nil {
		return nil, 0, fmt.Errorf("--archive-compression: %w", err)
	}
	if c.concurrency < 1 {
		return nil, 0, errors.New("--archive-upload-concurrency must be at least 1")
	}
	if c.url == "" {
		return nil, keep, nil
	}
	store, err := objstore.Open(ctx, c.url, objstore.Options{S3PathStyle: c.pathStyle})
	if err != nil {
		return nil, 0, fmt.Errorf("--archive: %w", err)
	}
	return &supervisor.ArchiveConfig{Store: store, Compression: comp, Offload: offload.Config{Concurrency: c.concurrency}}, keep, nil
}
