package objstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// FuzzReadHeader: the object-file header parser never panics, never claims
// more header than there is input, reads headerless input as content, and
// what it accepts re-encodes to a header that parses to the same metadata.
func FuzzReadHeader(f *testing.F) {
	good, _ := encodeHeader(map[string]string{"sha256": "abc", "start-lsn": "0/3000000"})
	f.Add(append(good, "content"...))
	empty, _ := encodeHeader(nil)
	f.Add(empty)
	f.Add([]byte("plain WAL bytes, no header"))
	f.Add([]byte(headerMagic))
	f.Add(binary.LittleEndian.AppendUint32([]byte(headerMagic), 1<<31))
	f.Fuzz(func(t *testing.T, data []byte) {
		meta, n, err := readHeader(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not wrapping ErrCorrupt: %v", err)
			}
			if !bytes.HasPrefix(data, []byte(headerMagic)) {
				t.Fatalf("error for input without the magic: %v", err)
			}
			return
		}
		if meta == nil || n < 0 || n > int64(len(data)) {
			t.Fatalf("meta %v, header length %d of %d bytes", meta, n, len(data))
		}
		if n == 0 {
			if bytes.HasPrefix(data, []byte(headerMagic)) || len(meta) != 0 {
				t.Fatalf("headerless result for %q: meta %v", data, meta)
			}
			return
		}
		hdr, err := encodeHeader(meta)
		if err != nil {
			return // e.g. re-encoded JSON over the bound after escaping
		}
		meta2, n2, err := readHeader(io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(data[n:])))
		if err != nil || n2 != int64(len(hdr)) || len(meta2) != len(meta) {
			t.Fatalf("re-encoded header: %v, length %d of %d, meta %v vs %v", err, n2, len(hdr), meta2, meta)
		}
		for k, v := range meta {
			if meta2[k] != v {
				t.Fatalf("re-encoded meta[%q] = %q, want %q", k, meta2[k], v)
			}
		}
	})
}
