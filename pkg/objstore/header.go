package objstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// headerMagic starts every object file written by the file backend.
const headerMagic = "SKOBJ01\n"

// headerFixedLen is the magic plus the uint32 metadata length.
const headerFixedLen = len(headerMagic) + 4

// maxHeaderJSON bounds the metadata JSON a header may announce. Create
// never writes more than a few KiB (MaxMetaSize plus JSON quoting); the
// bound only keeps a damaged length from making a reader allocate a lot.
const maxHeaderJSON = 64 << 10

// encodeHeader returns the header for an object with metadata meta.
func encodeHeader(meta map[string]string) ([]byte, error) {
	if meta == nil {
		meta = map[string]string{}
	}
	js, err := json.Marshal(meta) // map keys are sorted: deterministic
	if err != nil {
		return nil, fmt.Errorf("objstore: encode metadata: %w", err)
	}
	if len(js) > maxHeaderJSON {
		return nil, fmt.Errorf("%w: %d bytes of JSON, more than %d", ErrInvalidMeta, len(js), maxHeaderJSON)
	}
	hdr := make([]byte, 0, headerFixedLen+len(js))
	hdr = append(hdr, headerMagic...)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(js)))
	return append(hdr, js...), nil
}

// readHeader reads an object header from the start of r. It returns the
// metadata (never nil) and the header's length, which is where the content
// starts. Input that does not start with the magic (including input shorter
// than it) has no header: empty metadata and length 0; the caller must then
// read the content from the start again. Input that starts with the magic
// but whose header is truncated, too long or not a JSON object of strings
// is an error wrapping ErrCorrupt.
func readHeader(r io.Reader) (map[string]string, int64, error) {
	var fixed [headerFixedLen]byte
	n, err := io.ReadFull(r, fixed[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, 0, err
	}
	if n < len(headerMagic) || string(fixed[:len(headerMagic)]) != headerMagic {
		return map[string]string{}, 0, nil
	}
	if n < headerFixedLen {
		return nil, 0, fmt.Errorf("%w: truncated length field", ErrCorrupt)
	}
	jsLen := binary.LittleEndian.Uint32(fixed[len(headerMagic):])
	if jsLen > maxHeaderJSON {
		return nil, 0, fmt.Errorf("%w: metadata length %d exceeds %d", ErrCorrupt, jsLen, maxHeaderJSON)
	}
	js := make([]byte, jsLen)
	if _, err := io.ReadFull(r, js); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, 0, fmt.Errorf("%w: truncated metadata (%d bytes announced)", ErrCorrupt, jsLen)
		}
		return nil, 0, err
	}
	meta, err := decodeMetaJSON(js)
	if err != nil {
		return nil, 0, err
	}
	return meta, int64(headerFixedLen) + int64(jsLen), nil
}

// decodeMetaJSON parses exactly one JSON object of string values.
func decodeMetaJSON(js []byte) (map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(js))
	var meta map[string]string
	if err := dec.Decode(&meta); err != nil {
		return nil, fmt.Errorf("%w: metadata is not a JSON object of strings: %v", ErrCorrupt, err)
	}
	if meta == nil { // JSON null
		return nil, fmt.Errorf("%w: metadata is null, not a JSON object", ErrCorrupt)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the metadata object", ErrCorrupt)
	}
	return meta, nil
}
