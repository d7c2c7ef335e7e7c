package archive_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// fuzzSegSize is the segment size FuzzFetch reads with: small, so that
// the fuzzer can reach valid objects. Fetch by name does not need a
// PostgreSQL-valid size.
const fuzzSegSize = 1024

// FuzzFetch stores an object under a segment key, with a fuzzed body and
// fuzzed checksum, size and segment size metadata, compressed-named
// (".zst") or not, and reads it back through an archive configured with
// zstd or none. Fetch must not panic, and must either fail verification
// (ErrCorrupt: the object exists) or return content whose SHA-256 is the
// recorded one and whose length is the segment size.
func FuzzFetch(f *testing.F) {
	ctx := context.Background()
	root := f.TempDir()
	st, err := objstore.NewFileStore(root)
	if err != nil {
		f.Fatal(err)
	}
	byCompression := map[bool]*archive.Archive{}
	for none, c := range map[bool]archive.Compression{false: archive.Zstd, true: archive.None} {
		a, err := archive.New(st, tenantID, timelineID, c)
		if err != nil {
			f.Fatal(err)
		}
		byCompression[none] = a
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		f.Fatal(err)
	}
	content := make([]byte, fuzzSegSize)
	for i := range content {
		content[i] = byte(i * 7 / 3)
	}
	sum := sha256.Sum256(content)
	good := hex.EncodeToString(sum[:])
	compressed := enc.EncodeAll(content, nil)
	n := strconv.Itoa(fuzzSegSize)
	f.Add(content, good, n, n, false, false)
	f.Add(content, good, n, n, false, true)
	f.Add(compressed, good, n, n, true, false)
	f.Add(compressed, good, n, n, true, true)
	f.Add(compressed, good, "", n, true, false)
	f.Add(content, good, n, n, true, false)     // raw bytes under a .zst name
	f.Add(compressed, good, n, n, false, false) // compressed bytes under a raw name
	f.Add(content[:100], good, "100", "100", false, false)

	id := archive.Identity{SystemID: systemID, SegSize: fuzzSegSize}
	name := wal.SegmentFileName(1, 3, segSize)
	dir := filepath.Join(root, filepath.FromSlash(prefix()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, sha, size, segSize string, zst, noneArchive bool) {
		comp := "none"
		if zst {
			comp = "zstd"
		}
		meta := map[string]string{
			archive.MetaSHA256:      sha,
			archive.MetaSize:        size,
			archive.MetaSystemID:    strconv.FormatUint(systemID, 10),
			archive.MetaSegSize:     segSize,
			archive.MetaCompression: comp,
		}
		// The object is written as the file backend stores it (see the
		// objstore package documentation: magic, metadata length, JSON
		// metadata, content), without Create's fsyncs: a fuzzer runs
		// thousands of these. Metadata Create would refuse (not printable
		// ASCII) is allowed here: a file store's directory is input too.
		js, err := json.Marshal(meta)
		if err != nil {
			t.Fatal(err)
		}
		obj := binary.LittleEndian.AppendUint32([]byte("SKOBJ01\n"), uint32(len(js)))
		obj = append(append(obj, js...), body...)
		raw, zstPath := filepath.Join(dir, name), filepath.Join(dir, name+archive.ZstdSuffix)
		path, other := raw, zstPath
		if zst {
			path, other = zstPath, raw
		}
		if err := os.Remove(other); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, obj, 0o600); err != nil {
			t.Fatal(err)
		}
		// What the object records (JSON turns invalid UTF-8 into U+FFFD).
		info, err := st.Head(ctx, prefix()+strings.TrimPrefix(path, dir+string(filepath.Separator)))
		if err != nil {
			t.Fatal(err)
		}
		recorded := info.Meta[archive.MetaSHA256]
		a := byCompression[noneArchive]
		var (
			got       []byte
			ferr      error
			recovered any
		)
		func() {
			defer func() { recovered = recover() }()
			got, ferr = a.Fetch(ctx, name, id)
		}()
		if recovered != nil {
			t.Fatalf("Fetch panicked (zst=%v, sk-size %q, sk-wal-seg-size %q): %v", zst, size, segSize, recovered)
		}
		if ferr != nil {
			if !errors.Is(ferr, archive.ErrCorrupt) {
				t.Fatalf("Fetch of a stored object failed with %v, want ErrCorrupt", ferr)
			}
			return
		}
		s := sha256.Sum256(got)
		if hex.EncodeToString(s[:]) != recorded {
			t.Fatalf("Fetch returned content with sha256 %x, recorded %q", s, recorded)
		}
		if len(got) != fuzzSegSize {
			t.Fatalf("Fetch returned %d bytes, segment size is %d", len(got), fuzzSegSize)
		}
		if !zst && !bytes.Equal(got, body) {
			t.Fatal("Fetch of an uncompressed object returned other bytes than stored")
		}
	})
}
