package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// Compression of archived segments.
type Compression string

// Compressions.
const (
	Zstd Compression = "zstd"
	None Compression = "none"
)

// ParseCompression parses --archive-compression.
func ParseCompression(s string) (Compression, error) {
	switch Compression(s) {
	case Zstd, None:
		return Compression(s), nil
	}
	return "", fmt.Errorf("unknown compression %q (want zstd or none)", s)
}

// Object metadata keys (see the package documentation).
const (
	MetaSHA256      = "sk-sha256"
	MetaSize        = "sk-size"
	MetaSystemID    = "sk-system-id"
	MetaSegSize     = "sk-wal-seg-size"
	MetaCompression = "sk-compression"
)

// maxSegment is the largest WAL segment PostgreSQL allows (1 GB).
const maxSegment = 1 << 30

// ZstdSuffix marks a compressed segment.
const ZstdSuffix = ".zst"

var (
	// ErrNotFound means the archive does not hold the object.
	ErrNotFound = errors.New("not in the archive")
	// ErrConflict means an object with the name exists and holds other
	// content. It is never overwritten.
	ErrConflict = errors.New("archive holds a different object under this name")
	// ErrCorrupt means an object failed verification: checksum, size,
	// system identifier, segment size or decompression.
	ErrCorrupt = errors.New("archived object failed verification")
)

// Identity is what every object of a timeline must agree on. Zero fields
// are not checked on reads (a restore_command may not know them).
type Identity struct {
	SystemID uint64
	SegSize  uint64
}

// Archive is the WAL archive of one timeline. It is safe for concurrent use.
type Archive struct {
	store       objstore.Store
	prefix      string // "<tenant>/<timeline>/wal/"
	compression Compression
	enc         *zstd.Encoder
	dec         *zstd.Decoder
}

// WALPrefix returns the key prefix of a timeline's WAL.
func WALPrefix(tenantID, timelineID string) string {
	return tenantID + "/" + timelineID + "/wal/"
}

// New returns the archive of (tenantID, timelineID) in store; segments are
// written with compression c.
func New(store objstore.Store, tenantID, timelineID string, c Compression) (*Archive, error) {
	if c == "" {
		c = Zstd
	}
	if _, err := ParseCompression(string(c)); err != nil {
		return nil, err
	}
	// EncodeAll runs concurrently up to the encoder concurrency, which
	// defaults to GOMAXPROCS: uploads in parallel compress in parallel.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return nil, err
	}
	// Refuse to inflate anything bigger than the largest segment
	// PostgreSQL allows (a corrupt or hostile object).
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxSegment))
	if err != nil {
		return nil, err
	}
	return &Archive{store: store, prefix: WALPrefix(tenantID, timelineID), compression: c, enc: enc, dec: dec}, nil
}

// String names the archive for logs.
func (a *Archive) String() string {
	return strings.TrimSuffix(a.store.String(), "/") + "/" + a.prefix
}

// Store returns the underlying object store.
func (a *Archive) Store() objstore.Store { return a.store }

// Compression returns the compression used for new segments.
func (a *Archive) Compression() Compression { return a.compression }

// PutResult says what Put did.
type PutResult struct {
	Key            string
	StoredBytes    int64 // bytes sent to the store (compressed size); 0 when already present
	AlreadyPresent bool  // an identical object was there (a retry after a lost response)
}

// PutSegment archives a complete segment of timeline tli. data must be
// the whole segment.
func (a *Archive) PutSegment(ctx context.Context, tli uint32, segno uint64, data []byte, id Identity) (PutResult, error) {
	if uint64(len(data)) != id.SegSize {
		return PutResult{}, fmt.Errorf("segment of %d bytes, want %d", len(data), id.SegSize)
	}
	name := wal.SegmentFileName(tli, segno, id.SegSize)
	return a.put(ctx, name, data, id, a.compression, true)
}

// PutHistory archives the history file of timeline tli (never compressed).
func (a *Archive) PutHistory(ctx context.Context, tli uint32, content []byte, id Identity) (PutResult, error) {
	return a.put(ctx, wal.HistoryFileName(tli), content, id, None, false)
}

func (a *Archive) put(ctx context.Context, name string, data []byte, id Identity, c Compression, segment bool) (PutResult, error) {
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	key, alt := a.prefix+name, ""
	if segment {
		if c == Zstd {
			key, alt = a.prefix+name+ZstdSuffix, a.prefix+name
		} else {
			alt = a.prefix + name + ZstdSuffix
		}
		// The same segment archived earlier with the other compression
		// counts as present: never two objects for one segment.
		if _, err := a.store.Head(ctx, alt); err == nil {
			return a.compare(ctx, alt, want)
		} else if !errors.Is(err, objstore.ErrNotFound) {
			return PutResult{}, fmt.Errorf("look up %s: %w", alt, err)
		}
	}
	body := data
	if c == Zstd {
		body = a.enc.EncodeAll(data, make([]byte, 0, len(data)/2))
	}
	meta := map[string]string{
		MetaSHA256:      want,
		MetaSize:        strconv.Itoa(len(data)),
		MetaSystemID:    strconv.FormatUint(id.SystemID, 10),
		MetaSegSize:     strconv.FormatUint(id.SegSize, 10),
		MetaCompression: string(c),
	}
	err := a.store.Create(ctx, key, body, meta)
	if errors.Is(err, objstore.ErrExists) {
		return a.compare(ctx, key, want)
	}
	if err != nil {
		return PutResult{}, err
	}
	return PutResult{Key: key, StoredBytes: int64(len(body))}, nil
}

// compare decides whether the object at key holds content with checksum
// want: by its recorded checksum, or, for an object without one (placed by
// hand), by reading it.
func (a *Archive) compare(ctx context.Context, key, want string) (PutResult, error) {
	info, err := a.store.Head(ctx, key)
	if err != nil {
		return PutResult{}, fmt.Errorf("look up existing %s: %w", key, err)
	}
	got := info.Meta[MetaSHA256]
	if got == "" {
		content, _, err := a.getRaw(ctx, key)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			return PutResult{}, err
		}
		if err == nil {
			sum := sha256.Sum256(content)
			got = hex.EncodeToString(sum[:])
		}
	}
	if got != want {
		return PutResult{Key: key}, fmt.Errorf("%w: %s has sha256 %q, ours is %s", ErrConflict, key, got, want)
	}
	return PutResult{Key: key, AlreadyPresent: true}, nil
}

// getRaw fetches key and decompresses it by its suffix, without verifying.
func (a *Archive) getRaw(ctx context.Context, key string) ([]byte, objstore.Info, error) {
	rc, info, err := a.store.Get(ctx, key)
	if errors.Is(err, objstore.ErrNotFound) {
		return nil, info, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return nil, info, err
	}
	defer rc.Close()
	raw, err := io.ReadAll(rc)
	if err != nil {
		return nil, info, fmt.Errorf("read %s: %w", key, err)
	}
	if !strings.HasSuffix(key, ZstdSuffix) {
		return raw, info, nil
	}
	// Preallocate what the object says it inflates to, within the limit
	// the decoder enforces anyway: the metadata is not trusted yet.
	size, err := strconv.Atoi(info.Meta[MetaSize])
	if err != nil || size < 0 || size > maxSegment {
		size = 0
	}
	out, err := a.dec.DecodeAll(raw, make([]byte, 0, size))
	if err != nil {
		return nil, info, fmt.Errorf("%w: %s: decompress: %w", ErrCorrupt, key, err)
	}
	return out, info, nil
}

// verify checks content against what info records and what id expects.
func verify(key string, content []byte, info objstore.Info, id Identity, segment bool) error {
	m := info.Meta
	if m[MetaSHA256] == "" {
		return fmt.Errorf("%w: %s records no checksum", ErrCorrupt, key)
	}
	sum := sha256.Sum256(content)
	if got := hex.EncodeToString(sum[:]); got != m[MetaSHA256] {
		return fmt.Errorf("%w: %s: sha256 %s, recorded %s", ErrCorrupt, key, got, m[MetaSHA256])
	}
	if s := m[MetaSize]; s != "" && s != strconv.Itoa(len(content)) {
		return fmt.Errorf("%w: %s: %d bytes, recorded %s", ErrCorrupt, key, len(content), s)
	}
	if id.SystemID != 0 && m[MetaSystemID] != strconv.FormatUint(id.SystemID, 10) {
		return fmt.Errorf("%w: %s belongs to system %s, not %d", ErrCorrupt, key, m[MetaSystemID], id.SystemID)
	}
	if segment {
		seg, _ := strconv.ParseUint(m[MetaSegSize], 10, 64)
		if id.SegSize != 0 && seg != id.SegSize {
			return fmt.Errorf("%w: %s has segment size %s, not %d", ErrCorrupt, key, m[MetaSegSize], id.SegSize)
		}
		if uint64(len(content)) != seg {
			return fmt.Errorf("%w: %s holds %d bytes, not a whole segment of %d", ErrCorrupt, key, len(content), seg)
		}
	}
	return nil
}

// GetSegment fetches segment segno of timeline tli, under either
// compression suffix, and verifies it. id.SegSize is required.
func (a *Archive) GetSegment(ctx context.Context, tli uint32, segno uint64, id Identity) ([]byte, error) {
	return a.Fetch(ctx, wal.SegmentFileName(tli, segno, id.SegSize), id)
}

// GetHistory fetches and verifies the history file of timeline tli.
func (a *Archive) GetHistory(ctx context.Context, tli uint32, id Identity) ([]byte, error) {
	return a.Fetch(ctx, wal.HistoryFileName(tli), id)
}

// Fetch fetches a file by its PostgreSQL name (a segment or a history
// file, as restore_command's %f names it) and verifies it.
func (a *Archive) Fetch(ctx context.Context, name string, id Identity) ([]byte, error) {
	if _, ok := wal.ParseHistoryFileName(name); ok {
		key := a.prefix + name
		content, info, err := a.getRaw(ctx, key)
		if err != nil {
			return nil, err
		}
		return content, verify(key, content, info, id, false)
	}
	if !wal.IsSegmentName(name) {
		return nil, fmt.Errorf("%w: %q is not a segment or history file name", ErrNotFound, name)
	}
	keys := []string{a.prefix + name + ZstdSuffix, a.prefix + name}
	if a.compression == None {
		keys[0], keys[1] = keys[1], keys[0]
	}
	for _, key := range keys {
		content, info, err := a.getRaw(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return content, verify(key, content, info, id, true)
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
}

// Entry is one object of a timeline's archive.
type Entry struct {
	Key        string
	Name       string // PostgreSQL file name, without ".zst"
	Size       int64  // stored (possibly compressed) size
	Compressed bool
	History    bool
	TLI        uint32
	SegNo      uint64 // segments only
}

// List returns the timeline's archived segments (sorted by segment, then
// TLI) and history files, and the keys it did not recognise. segSize is
// needed to number segments.
func (a *Archive) List(ctx context.Context, segSize uint64) (segments, histories []Entry, other []string, err error) {
	infos, err := a.store.List(ctx, a.prefix)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, in := range infos {
		name := strings.TrimPrefix(in.Key, a.prefix)
		if tli, ok := wal.ParseHistoryFileName(name); ok {
			histories = append(histories, Entry{Key: in.Key, Name: name, Size: in.Size, History: true, TLI: tli})
			continue
		}
		base, compressed := strings.CutSuffix(name, ZstdSuffix)
		if tli, segno, ok := wal.ParseSegmentFileName(base, segSize); ok {
			segments = append(segments, Entry{Key: in.Key, Name: base, Size: in.Size, Compressed: compressed, TLI: tli, SegNo: segno})
			continue
		}
		other = append(other, in.Key)
	}
	sortEntries(segments)
	return segments, histories, other, nil
}

func sortEntries(e []Entry) {
	sort.Slice(e, func(i, j int) bool {
		if e[i].SegNo != e[j].SegNo {
			return e[i].SegNo < e[j].SegNo
		}
		if e[i].TLI != e[j].TLI {
			return e[i].TLI < e[j].TLI
		}
		return e[i].Key < e[j].Key
	})
}

// Head returns the stored info of an archived entry (its metadata).
func (a *Archive) Head(ctx context.Context, key string) (objstore.Info, error) {
	return a.store.Head(ctx, key)
}

// Check fetches an entry, decompresses it and verifies it against its
// metadata and id; it returns the verified content size.
func (a *Archive) Check(ctx context.Context, e Entry, id Identity) (int, error) {
	content, info, err := a.getRaw(ctx, e.Key)
	if err != nil {
		return 0, err
	}
	return len(content), verify(e.Key, content, info, id, !e.History)
}

// DeleteAll deletes the whole archive of the timeline: every object whose
// key starts with the archive's prefix (<tenant_id>/<timeline_id>/wal/),
// segments, history files and whatever else is stored there, in key
// order, and nothing outside it. It stops at the first error and returns
// how many objects it deleted before that. An empty or partly deleted
// archive is not an error: calling DeleteAll again finishes the job.
//
// It is meant for an operator's explicit request, the timeline being
// deleted. The caller stops what writes to the archive (the timeline's
// offloader) first: an object created after DeleteAll listed the archive
// survives it.
func (a *Archive) DeleteAll(ctx context.Context) (deleted int, err error) {
	infos, err := a.store.List(ctx, a.prefix)
	if err != nil {
		return 0, fmt.Errorf("delete %s: %w", a, err)
	}
	keys := make([]string, 0, len(infos))
	for _, in := range infos {
		// List promises this; a Store that broke the promise must not
		// make us delete another timeline's WAL. Checked before deleting
		// anything.
		if !strings.HasPrefix(in.Key, a.prefix) {
			return 0, fmt.Errorf("delete %s: the store listed %q, which is outside the archive; nothing deleted", a, in.Key)
		}
		keys = append(keys, in.Key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if err := a.store.Delete(ctx, key); err != nil {
			return deleted, fmt.Errorf("delete %s: %d of %d objects deleted: %w", a, deleted, len(keys), err)
		}
		deleted++
	}
	return deleted, nil
}

// Timelines lists the (tenant_id, timeline_id) pairs that have WAL in store.
func Timelines(ctx context.Context, store objstore.Store) ([][2]string, error) {
	infos, err := store.List(ctx, "")
	if err != nil {
		return nil, err
	}
	var out [][2]string
	seen := map[[2]string]bool{}
	for _, in := range infos {
		parts := strings.SplitN(in.Key, "/", 4)
		if len(parts) == 4 && parts[2] == "wal" {
			k := [2]string{parts[0], parts[1]}
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out, nil
}
