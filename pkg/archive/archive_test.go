package archive_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

const (
	segSize    = 1 << 20
	systemID   = 7301234567890123456
	tenantID   = "0123456789abcdef0123456789abcdef"
	timelineID = "fedcba9876543210fedcba9876543210"
)

var testID = archive.Identity{SystemID: systemID, SegSize: segSize}

// newStore opens a real file:// store in a fresh directory.
func newStore(t *testing.T) (*objstore.FileStore, string) {
	t.Helper()
	root := t.TempDir()
	st, err := objstore.Open(context.Background(), "file://"+root, objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st.(*objstore.FileStore), root
}

func newArchive(t *testing.T, st objstore.Store, c archive.Compression) *archive.Archive {
	t.Helper()
	a, err := archive.New(st, tenantID, timelineID, c)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// segmentData returns a deterministic segment, distinct for every (seed,
// segno): a random head and a compressible tail. Segments are cached: the
// tests build the same ones many times.
func segmentData(seed, segno uint64) []byte {
	k := [2]uint64{seed, segno}
	if b, ok := segCache.Load(k); ok {
		return b.([]byte)
	}
	b := make([]byte, segSize)
	r := rand.New(rand.NewPCG(seed, segno))
	const head = 64 << 10
	for i := 0; i < head; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := head; i < len(b); i++ {
		b[i] = byte(i/512) ^ byte(seed) ^ byte(segno)
	}
	segCache.Store(k, b)
	return b
}

var segCache sync.Map

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func prefix() string { return archive.WALPrefix(tenantID, timelineID) }

// keys lists every object key in the store.
func keys(t *testing.T, st objstore.Store) []string {
	t.Helper()
	infos, err := st.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range infos {
		out = append(out, in.Key)
	}
	return out
}

func storedContent(t *testing.T, st objstore.Store, key string) ([]byte, objstore.Info) {
	t.Helper()
	rc, info, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), info
}

// placeRaw writes a file into the store's directory by hand: an object
// without metadata whose content is the whole file.
func placeRaw(t *testing.T, root, key string, content []byte) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
}

// zstdCompress compresses b as an independent zstd encoder would
// (results cached by content: the tests compress the same segments often).
func zstdCompress(t *testing.T, b []byte) []byte {
	t.Helper()
	k := sha(b)
	if z, ok := zstdCache.Load(k); ok {
		return z.([]byte)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	z := enc.EncodeAll(b, nil)
	zstdCache.Store(k, z)
	return z
}

var zstdCache sync.Map

func TestParseCompressionAndNew(t *testing.T) {
	for _, s := range []string{"zstd", "none"} {
		c, err := archive.ParseCompression(s)
		if err != nil || string(c) != s {
			t.Errorf("ParseCompression(%q) = %q, %v", s, c, err)
		}
	}
	for _, s := range []string{"", "lz4", "ZSTD", "gzip"} {
		if _, err := archive.ParseCompression(s); err == nil {
			t.Errorf("ParseCompression(%q) accepted", s)
		}
	}
	st, _ := newStore(t)
	if a := newArchive(t, st, ""); a.Compression() != archive.Zstd {
		t.Errorf("default compression %q, want zstd", a.Compression())
	}
	if _, err := archive.New(st, tenantID, timelineID, "lz4"); err == nil {
		t.Error("New accepted compression lz4")
	}
	a := newArchive(t, st, archive.None)
	if a.Store() != objstore.Store(st) {
		t.Error("Store() is not the store given to New")
	}
	if want := st.String() + "/" + prefix(); a.String() != want {
		t.Errorf("String() = %q, want %q", a.String(), want)
	}
}

func TestPutGetRoundTrip(t *testing.T) {
	for _, c := range []archive.Compression{archive.Zstd, archive.None} {
		t.Run(string(c), func(t *testing.T) {
			ctx := context.Background()
			st, _ := newStore(t)
			a := newArchive(t, st, c)
			const tli, segno = 1, 3
			data := segmentData(1, segno)
			res, err := a.PutSegment(ctx, tli, segno, data, testID)
			if err != nil {
				t.Fatal(err)
			}
			name := wal.SegmentFileName(tli, segno, segSize)
			wantKey := prefix() + name
			if c == archive.Zstd {
				wantKey += archive.ZstdSuffix
			}
			if res.Key != wantKey || res.AlreadyPresent {
				t.Fatalf("PutSegment = %+v, want key %s, not already present", res, wantKey)
			}
			if got := keys(t, st); !reflect.DeepEqual(got, []string{wantKey}) {
				t.Fatalf("store holds %v, want exactly %s", got, wantKey)
			}
			body, info := storedContent(t, st, wantKey)
			if res.StoredBytes != int64(len(body)) {
				t.Errorf("StoredBytes %d, object holds %d bytes", res.StoredBytes, len(body))
			}
			if c == archive.Zstd {
				if len(body) >= len(data) {
					t.Errorf("zstd object of %d bytes for %d bytes of compressible data", len(body), len(data))
				}
			} else if !bytes.Equal(body, data) {
				t.Error("uncompressed object differs from the segment")
			}
			wantMeta := map[string]string{
				archive.MetaSHA256:      sha(data),
				archive.MetaSize:        strconv.Itoa(segSize),
				archive.MetaSystemID:    strconv.FormatUint(systemID, 10),
				archive.MetaSegSize:     strconv.Itoa(segSize),
				archive.MetaCompression: string(c),
			}
			if !reflect.DeepEqual(info.Meta, wantMeta) {
				t.Errorf("metadata %v, want %v", info.Meta, wantMeta)
			}
			got, err := a.GetSegment(ctx, tli, segno, testID)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("GetSegment returned other content than was put")
			}
			// Zero identity fields are not checked.
			if got, err := a.GetSegment(ctx, tli, segno, archive.Identity{SegSize: segSize}); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("GetSegment without system id: %v", err)
			}
		})
	}
}

func TestPutSegmentWrongLength(t *testing.T) {
	st, _ := newStore(t)
	a := newArchive(t, st, archive.Zstd)
	if _, err := a.PutSegment(context.Background(), 1, 1, make([]byte, segSize-1), testID); err == nil {
		t.Fatal("PutSegment accepted a short segment")
	}
	if k := keys(t, st); len(k) != 0 {
		t.Fatalf("store holds %v after a refused put", k)
	}
}

func TestPutTwiceIsAlreadyPresent(t *testing.T) {
	for _, c := range []archive.Compression{archive.Zstd, archive.None} {
		t.Run(string(c), func(t *testing.T) {
			ctx := context.Background()
			st, _ := newStore(t)
			a := newArchive(t, st, c)
			data := segmentData(2, 5)
			first, err := a.PutSegment(ctx, 1, 5, data, testID)
			if err != nil {
				t.Fatal(err)
			}
			second, err := a.PutSegment(ctx, 1, 5, data, testID)
			if err != nil {
				t.Fatal(err)
			}
			if !second.AlreadyPresent || second.StoredBytes != 0 || second.Key != first.Key {
				t.Fatalf("second put = %+v, want already present under %s", second, first.Key)
			}
			if k := keys(t, st); len(k) != 1 {
				t.Fatalf("store holds %v, want one object", k)
			}
		})
	}
}

// A segment archived with one compression and put again by an archive
// configured with the other counts as present: never two objects.
func TestPutOtherCompressionCountsAsPresent(t *testing.T) {
	for _, tc := range []struct{ first, second archive.Compression }{
		{archive.Zstd, archive.None},
		{archive.None, archive.Zstd},
	} {
		t.Run(string(tc.first)+"-then-"+string(tc.second), func(t *testing.T) {
			ctx := context.Background()
			st, _ := newStore(t)
			a1, a2 := newArchive(t, st, tc.first), newArchive(t, st, tc.second)
			data := segmentData(3, 9)
			r1, err := a1.PutSegment(ctx, 2, 9, data, testID)
			if err != nil {
				t.Fatal(err)
			}
			r2, err := a2.PutSegment(ctx, 2, 9, data, testID)
			if err != nil {
				t.Fatal(err)
			}
			if !r2.AlreadyPresent || r2.Key != r1.Key || r2.StoredBytes != 0 {
				t.Fatalf("put with %s after %s = %+v, want already present under %s", tc.second, tc.first, r2, r1.Key)
			}
			if k := keys(t, st); !reflect.DeepEqual(k, []string{r1.Key}) {
				t.Fatalf("store holds %v, want only %s", k, r1.Key)
			}
			// Either archive reads it back.
			for _, a := range []*archive.Archive{a1, a2} {
				got, err := a.GetSegment(ctx, 2, 9, testID)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("GetSegment through the %s archive: %v", a.Compression(), err)
				}
			}
		})
	}
}

func TestPutConflictNeverOverwrites(t *testing.T) {
	for _, tc := range []struct{ first, second archive.Compression }{
		{archive.Zstd, archive.Zstd},
		{archive.None, archive.None},
		{archive.Zstd, archive.None},
		{archive.None, archive.Zstd},
	} {
		t.Run(string(tc.first)+"-then-"+string(tc.second), func(t *testing.T) {
			ctx := context.Background()
			st, _ := newStore(t)
			a1, a2 := newArchive(t, st, tc.first), newArchive(t, st, tc.second)
			ours, theirs := segmentData(4, 2), segmentData(5, 2)
			r1, err := a1.PutSegment(ctx, 1, 2, theirs, testID)
			if err != nil {
				t.Fatal(err)
			}
			before, beforeInfo := storedContent(t, st, r1.Key)
			_, err = a2.PutSegment(ctx, 1, 2, ours, testID)
			if !errors.Is(err, archive.ErrConflict) {
				t.Fatalf("put of different content: %v, want ErrConflict", err)
			}
			after, afterInfo := storedContent(t, st, r1.Key)
			if !bytes.Equal(before, after) || !reflect.DeepEqual(beforeInfo.Meta, afterInfo.Meta) {
				t.Fatal("conflicting put changed the stored object")
			}
			if k := keys(t, st); !reflect.DeepEqual(k, []string{r1.Key}) {
				t.Fatalf("store holds %v, want only %s", k, r1.Key)
			}
			got, err := a2.GetSegment(ctx, 1, 2, testID)
			if err != nil || !bytes.Equal(got, theirs) {
				t.Fatalf("archive no longer returns the original content: %v", err)
			}
		})
	}
}

// An object placed by hand (no metadata) with identical content is
// recognised by reading it; one with other content is a conflict.
func TestPutOverHandPlacedObject(t *testing.T) {
	ctx := context.Background()
	data := segmentData(6, 4)
	name := wal.SegmentFileName(1, 4, segSize)
	for _, tc := range []struct {
		desc    string
		key     string
		content func(t *testing.T) []byte
		c       archive.Compression
		wantErr error
	}{
		{"raw identical, none archive", name, func(*testing.T) []byte { return data }, archive.None, nil},
		{"raw identical, zstd archive", name, func(*testing.T) []byte { return data }, archive.Zstd, nil},
		{"zst identical, zstd archive", name + ".zst", func(t *testing.T) []byte { return zstdCompress(t, data) }, archive.Zstd, nil},
		{"zst identical, none archive", name + ".zst", func(t *testing.T) []byte { return zstdCompress(t, data) }, archive.None, nil},
		{"raw different", name, func(*testing.T) []byte { return segmentData(7, 4) }, archive.None, archive.ErrConflict},
		{"raw truncated", name, func(*testing.T) []byte { return data[:1000] }, archive.Zstd, archive.ErrConflict},
		{"zst garbage", name + ".zst", func(*testing.T) []byte { return []byte("not zstd at all") }, archive.Zstd, archive.ErrConflict},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			st, root := newStore(t)
			placed := tc.content(t)
			placeRaw(t, root, prefix()+tc.key, placed)
			a := newArchive(t, st, tc.c)
			res, err := a.PutSegment(ctx, 1, 4, data, testID)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("PutSegment: %v, want %v", err, tc.wantErr)
				}
			} else if err != nil || !res.AlreadyPresent || res.Key != prefix()+tc.key {
				t.Fatalf("PutSegment = %+v, %v; want already present under %s", res, err, prefix()+tc.key)
			}
			if k := keys(t, st); !reflect.DeepEqual(k, []string{prefix() + tc.key}) {
				t.Fatalf("store holds %v, want only the placed object", k)
			}
			if got, _ := storedContent(t, st, prefix()+tc.key); !bytes.Equal(got, placed) {
				t.Fatal("placed object changed")
			}
		})
	}
}

// createObject stores an object under the timeline's prefix with the
// given metadata.
func createObject(t *testing.T, st objstore.Store, name string, body []byte, meta map[string]string) {
	t.Helper()
	if err := st.Create(context.Background(), prefix()+name, body, meta); err != nil {
		t.Fatal(err)
	}
}

func goodMeta(content []byte, c archive.Compression) map[string]string {
	return map[string]string{
		archive.MetaSHA256:      sha(content),
		archive.MetaSize:        strconv.Itoa(len(content)),
		archive.MetaSystemID:    strconv.FormatUint(systemID, 10),
		archive.MetaSegSize:     strconv.Itoa(segSize),
		archive.MetaCompression: string(c),
	}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{}
	for kk, vv := range m {
		out[kk] = vv
	}
	if v == "" {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

func TestGetSegmentVerifies(t *testing.T) {
	ctx := context.Background()
	data := segmentData(8, 6)
	name := wal.SegmentFileName(1, 6, segSize)
	flipped := append([]byte{}, data...)
	flipped[12345] ^= 1
	for _, tc := range []struct {
		desc string
		obj  string
		body func(t *testing.T) []byte
		meta map[string]string
	}{
		{"wrong sha256", name, func(*testing.T) []byte { return data },
			with(goodMeta(data, archive.None), archive.MetaSHA256, sha([]byte("other")))},
		{"wrong sha256 zstd", name + ".zst", func(t *testing.T) []byte { return zstdCompress(t, data) },
			with(goodMeta(data, archive.Zstd), archive.MetaSHA256, sha([]byte("other")))},
		{"flipped bit", name, func(*testing.T) []byte { return flipped }, goodMeta(data, archive.None)},
		{"no checksum", name, func(*testing.T) []byte { return data }, with(goodMeta(data, archive.None), archive.MetaSHA256, "")},
		{"wrong recorded size", name, func(*testing.T) []byte { return data }, with(goodMeta(data, archive.None), archive.MetaSize, "1000")},
		{"truncated segment with matching metadata", name, func(*testing.T) []byte { return data[:segSize/2] }, goodMeta(data[:segSize/2], archive.None)},
		{"undecodable zstd", name + ".zst", func(*testing.T) []byte { return []byte("\x28\xb5\x2f\xfdgarbage") }, goodMeta(data, archive.Zstd)},
		{"segment size metadata missing", name, func(*testing.T) []byte { return data }, with(goodMeta(data, archive.None), archive.MetaSegSize, "")},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			st, _ := newStore(t)
			createObject(t, st, tc.obj, tc.body(t), tc.meta)
			for _, c := range []archive.Compression{archive.Zstd, archive.None} {
				a := newArchive(t, st, c)
				got, err := a.GetSegment(ctx, 1, 6, testID)
				if !errors.Is(err, archive.ErrCorrupt) {
					t.Fatalf("%s archive: GetSegment = %d bytes, %v; want ErrCorrupt", c, len(got), err)
				}
				if _, err := a.Fetch(ctx, name, archive.Identity{}); !errors.Is(err, archive.ErrCorrupt) {
					t.Fatalf("%s archive: Fetch without identity: %v; want ErrCorrupt", c, err)
				}
			}
		})
	}
}

func TestGetSegmentWrongIdentity(t *testing.T) {
	ctx := context.Background()
	for _, c := range []archive.Compression{archive.Zstd, archive.None} {
		t.Run(string(c), func(t *testing.T) {
			st, _ := newStore(t)
			a := newArchive(t, st, c)
			data := segmentData(9, 3)
			if _, err := a.PutSegment(ctx, 1, 3, data, testID); err != nil {
				t.Fatal(err)
			}
			if _, err := a.GetSegment(ctx, 1, 3, archive.Identity{SystemID: systemID + 1, SegSize: segSize}); !errors.Is(err, archive.ErrCorrupt) {
				t.Errorf("other system id: %v, want ErrCorrupt", err)
			}
			// Segment 3 has the same name with 2 MiB segments.
			if wal.SegmentFileName(1, 3, 2<<20) != wal.SegmentFileName(1, 3, segSize) {
				t.Fatal("test assumption: names differ")
			}
			if _, err := a.GetSegment(ctx, 1, 3, archive.Identity{SystemID: systemID, SegSize: 2 << 20}); !errors.Is(err, archive.ErrCorrupt) {
				t.Errorf("other segment size: %v, want ErrCorrupt", err)
			}
			if _, err := a.Fetch(ctx, wal.SegmentFileName(1, 3, segSize), archive.Identity{SegSize: 16 << 20}); !errors.Is(err, archive.ErrCorrupt) {
				t.Errorf("Fetch with other segment size: %v, want ErrCorrupt", err)
			}
			if got, err := a.Fetch(ctx, wal.SegmentFileName(1, 3, segSize), archive.Identity{}); err != nil || !bytes.Equal(got, data) {
				t.Errorf("Fetch without identity: %v", err)
			}
		})
	}
}

func TestMissingIsNotFound(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	a := newArchive(t, st, archive.Zstd)
	if _, err := a.GetSegment(ctx, 1, 1, testID); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("GetSegment on empty archive: %v", err)
	}
	if _, err := a.PutSegment(ctx, 1, 2, segmentData(1, 2), testID); err != nil {
		t.Fatal(err)
	}
	// Same segment number, other timeline; next segment.
	if _, err := a.GetSegment(ctx, 2, 2, testID); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("GetSegment of another TLI: %v", err)
	}
	if _, err := a.GetSegment(ctx, 1, 3, testID); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("GetSegment of a missing segment: %v", err)
	}
	if _, err := a.GetHistory(ctx, 2, testID); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("GetHistory of a missing file: %v", err)
	}
	// Another timeline's archive in the same store sees nothing.
	other, err := archive.New(st, tenantID, "00000000000000000000000000000001", archive.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.GetSegment(ctx, 1, 2, testID); !errors.Is(err, archive.ErrNotFound) {
		t.Errorf("GetSegment through another timeline's archive: %v", err)
	}
}

func TestHistoryRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, c := range []archive.Compression{archive.Zstd, archive.None} {
		t.Run(string(c), func(t *testing.T) {
			st, _ := newStore(t)
			a := newArchive(t, st, c)
			content := []byte("1\t0/3000000\tno recovery target specified\n")
			res, err := a.PutHistory(ctx, 2, content, testID)
			if err != nil {
				t.Fatal(err)
			}
			wantKey := prefix() + "00000002.history" // never compressed
			if res.Key != wantKey || res.AlreadyPresent || res.StoredBytes != int64(len(content)) {
				t.Fatalf("PutHistory = %+v, want new object %s of %d bytes", res, wantKey, len(content))
			}
			body, info := storedContent(t, st, wantKey)
			if !bytes.Equal(body, content) || info.Meta[archive.MetaCompression] != "none" || info.Meta[archive.MetaSHA256] != sha(content) {
				t.Fatalf("stored history %q, meta %v", body, info.Meta)
			}
			got, err := a.GetHistory(ctx, 2, testID)
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("GetHistory = %q, %v", got, err)
			}
			got, err = a.Fetch(ctx, "00000002.history", archive.Identity{})
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("Fetch(history) = %q, %v", got, err)
			}
			if _, err := a.GetHistory(ctx, 2, archive.Identity{SystemID: systemID + 1}); !errors.Is(err, archive.ErrCorrupt) {
				t.Errorf("GetHistory with another system id: %v, want ErrCorrupt", err)
			}
			again, err := a.PutHistory(ctx, 2, content, testID)
			if err != nil || !again.AlreadyPresent {
				t.Fatalf("second PutHistory = %+v, %v", again, err)
			}
			if _, err := a.PutHistory(ctx, 2, []byte("1\t0/4000000\tother\n"), testID); !errors.Is(err, archive.ErrConflict) {
				t.Fatalf("PutHistory with other content: %v, want ErrConflict", err)
			}
			if got, _ := storedContent(t, st, wantKey); !bytes.Equal(got, content) {
				t.Fatal("history object changed")
			}
			if k := keys(t, st); !reflect.DeepEqual(k, []string{wantKey}) {
				t.Fatalf("store holds %v", k)
			}
		})
	}
}

func TestFetchByName(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	az, an := newArchive(t, st, archive.Zstd), newArchive(t, st, archive.None)
	segZ, segN := segmentData(10, 1), segmentData(11, 2)
	if _, err := az.PutSegment(ctx, 1, 1, segZ, testID); err != nil {
		t.Fatal(err)
	}
	if _, err := an.PutSegment(ctx, 1, 2, segN, testID); err != nil {
		t.Fatal(err)
	}
	hist := []byte("1\t0/2000000\tbecause\n")
	if _, err := az.PutHistory(ctx, 2, hist, testID); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*archive.Archive{az, an} {
		for name, want := range map[string][]byte{
			wal.SegmentFileName(1, 1, segSize): segZ,
			wal.SegmentFileName(1, 2, segSize): segN,
			"00000002.history":                 hist,
		} {
			got, err := a.Fetch(ctx, name, testID)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s archive: Fetch(%s): %d bytes, %v", a.Compression(), name, len(got), err)
			}
		}
		for _, junk := range []string{
			"", "junk", "000000010000000000000001.zst", "000000010000000000000001.partial",
			"000000010000000000000001.gz", "00000001000000000000000g", "0000000100000000000000001",
			"00000000.history", "0000002.history", "00000002.HISTORY", "../00000002.history",
			"00000002.history.zst", "00000001000000000000000A.backup",
		} {
			if got, err := a.Fetch(ctx, junk, testID); !errors.Is(err, archive.ErrNotFound) {
				t.Errorf("%s archive: Fetch(%q) = %d bytes, %v; want ErrNotFound", a.Compression(), junk, len(got), err)
			}
		}
	}
}

func TestList(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	az, an := newArchive(t, st, archive.Zstd), newArchive(t, st, archive.None)
	type put struct {
		a     *archive.Archive
		tli   uint32
		segno uint64
	}
	// Put in an order that is neither key order nor (segno, tli) order.
	puts := []put{{az, 2, 3}, {an, 1, 5}, {az, 1, 3}, {an, 1, 4}, {az, 3, 4}, {az, 1, 0x100}, {an, 2, 1}}
	for _, p := range puts {
		if _, err := p.a.PutSegment(ctx, p.tli, p.segno, segmentData(12, p.segno), testID); err != nil {
			t.Fatal(err)
		}
	}
	for _, tli := range []uint32{3, 2} {
		if _, err := az.PutHistory(ctx, tli, []byte("history of "+strconv.Itoa(int(tli))), testID); err != nil {
			t.Fatal(err)
		}
	}
	junk := []string{prefix() + "000000010000000000000009.partial", prefix() + "README", prefix() + "sub/000000010000000000000003"}
	for _, k := range junk {
		if err := st.Create(ctx, k, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	// Another timeline's WAL is not listed.
	other, _ := archive.New(st, tenantID, "00000000000000000000000000000001", archive.Zstd)
	if _, err := other.PutSegment(ctx, 1, 1, segmentData(12, 1), testID); err != nil {
		t.Fatal(err)
	}

	for _, a := range []*archive.Archive{az, an} {
		segs, hists, others, err := a.List(ctx, segSize)
		if err != nil {
			t.Fatal(err)
		}
		type seg struct {
			tli        uint32
			segno      uint64
			compressed bool
		}
		var got []seg
		for _, e := range segs {
			got = append(got, seg{e.TLI, e.SegNo, e.Compressed})
			wantKey := prefix() + e.Name
			if e.Compressed {
				wantKey += archive.ZstdSuffix
			}
			if e.Key != wantKey || e.Name != wal.SegmentFileName(e.TLI, e.SegNo, segSize) || e.History {
				t.Errorf("entry %+v: inconsistent key/name", e)
			}
			info, err := st.Head(ctx, e.Key)
			if err != nil || info.Size != e.Size {
				t.Errorf("entry %s: size %d, stored %d (%v)", e.Key, e.Size, info.Size, err)
			}
			if n, err := a.Check(ctx, e, testID); err != nil || n != segSize {
				t.Errorf("Check(%s) = %d, %v", e.Key, n, err)
			}
		}
		want := []seg{{2, 1, false}, {1, 3, true}, {2, 3, true}, {1, 4, false}, {3, 4, true}, {1, 5, false}, {1, 0x100, true}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("segments %v\nwant     %v", got, want)
		}
		var gotH []uint32
		for _, h := range hists {
			gotH = append(gotH, h.TLI)
			if !h.History || h.Name != wal.HistoryFileName(h.TLI) || h.Key != prefix()+h.Name || h.Compressed {
				t.Errorf("history entry %+v", h)
			}
			if n, err := a.Check(ctx, h, testID); err != nil || n != len("history of 2") {
				t.Errorf("Check(%s) = %d, %v", h.Key, n, err)
			}
		}
		if !reflect.DeepEqual(gotH, []uint32{2, 3}) {
			t.Errorf("histories %v, want [2 3]", gotH)
		}
		wantOther := append([]string{}, junk...)
		sortStrings(wantOther)
		if !reflect.DeepEqual(others, wantOther) {
			t.Errorf("other keys %v, want %v", others, wantOther)
		}
	}
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func TestCheckDetectsCorruption(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	a := newArchive(t, st, archive.None)
	data := segmentData(13, 2)
	createObject(t, st, wal.SegmentFileName(1, 2, segSize), data, with(goodMeta(data, archive.None), archive.MetaSHA256, sha(nil)))
	segs, _, _, err := a.List(ctx, segSize)
	if err != nil || len(segs) != 1 {
		t.Fatalf("List: %v, %v", segs, err)
	}
	if _, err := a.Check(ctx, segs[0], testID); !errors.Is(err, archive.ErrCorrupt) {
		t.Fatalf("Check of a corrupt object: %v", err)
	}
	if _, err := a.Check(ctx, archive.Entry{Key: prefix() + "missing"}, testID); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("Check of a missing object: %v", err)
	}
}

func TestTimelines(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	if got, err := archive.Timelines(ctx, st); err != nil || len(got) != 0 {
		t.Fatalf("Timelines of an empty store = %v, %v", got, err)
	}
	pairs := [][2]string{{"aa", "t1"}, {"aa", "t2"}, {"bb", "t1"}}
	for _, p := range pairs {
		a, err := archive.New(st, p[0], p[1], archive.Zstd)
		if err != nil {
			t.Fatal(err)
		}
		for segno := uint64(1); segno <= 2; segno++ {
			if _, err := a.PutSegment(ctx, 1, segno, segmentData(14, segno), testID); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := a.PutHistory(ctx, 2, []byte("h"), testID); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"cc/t1/notwal/x", "dd/t1/wal", "ee/readme", "top"} {
		if err := st.Create(ctx, k, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	got, err := archive.Timelines(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, pairs) {
		t.Fatalf("Timelines = %v, want %v", got, pairs)
	}
}

// Metadata is untrusted input: a sk-size that is not a plausible size
// must make a read fail verification, not crash the process (the size
// is used as an allocation hint before decompressing).
func TestFetchZstdWithImplausibleSizeMetadata(t *testing.T) {
	ctx := context.Background()
	data := segmentData(15, 3)
	name := wal.SegmentFileName(1, 3, segSize)
	for _, size := range []string{"-1", "9223372036854775807", "abc", "0", "1"} {
		t.Run(size, func(t *testing.T) {
			st, _ := newStore(t)
			a := newArchive(t, st, archive.Zstd)
			createObject(t, st, name+archive.ZstdSuffix, zstdCompress(t, data), with(goodMeta(data, archive.Zstd), archive.MetaSize, size))
			var (
				got []byte
				err error
			)
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("Fetch panicked on sk-size %q: %v", size, r)
					}
				}()
				got, err = a.Fetch(ctx, name, testID)
			}()
			if !errors.Is(err, archive.ErrCorrupt) {
				t.Fatalf("Fetch = %d bytes, %v; want ErrCorrupt (recorded size %s is wrong)", len(got), err, size)
			}
		})
	}
}

// WALPrefix is the documented layout: <tenant>/<timeline>/wal/.
func TestWALPrefix(t *testing.T) {
	if got := archive.WALPrefix("t", "l"); got != "t/l/wal/" {
		t.Fatalf("WALPrefix = %q", got)
	}
	if !strings.HasSuffix(prefix(), "/wal/") {
		t.Fatal(prefix())
	}
}
