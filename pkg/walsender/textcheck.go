package walsender

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

// checkClientText checks a query string the way PostgreSQL checks text
// that arrives from a client of a physical walsender (pg_any_to_server).
// Such a session is connected to no database, so its database encoding
// is SQL_ASCII and nothing is converted, but the bytes must be valid in
// the client encoding enc (client_encoding's value) when that encoding can
// be a server encoding, and must be plain ASCII when it cannot (SJIS, BIG5
// and the other client-only encodings, whose second bytes can look like
// ASCII quote characters). Single-byte encodings accept every byte.
// The error is PostgreSQL's: 22021 with the offending character's bytes.
func checkClientText(enc, s string) error {
	if enc == "UNICODE" {
		enc = "UTF8"
	}
	var char func(s string) int // length of a valid character at s[0], or -1
	var mblen func(b byte) int  // the length PostgreSQL reports for a lead byte
	switch enc {
	case "UTF8":
		char, mblen = utf8Char, utf8Len
	case "EUC_JP", "EUC_JIS_2004":
		char, mblen = eucJPChar, eucLen
	case "EUC_KR":
		char, mblen = eucKRChar, eucLen
	case "EUC_CN":
		char, mblen = eucKRChar, eucCNLen
	case "EUC_TW":
		char, mblen = eucTWChar, eucTWLen
	case "MULE_INTERNAL":
		char, mblen = muleChar, muleLen
	case "SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "UHC", "GB18030", "JOHAB":
		for i := 0; i < len(s); i++ {
			if s[i] == 0 || s[i] >= 0x80 {
				return pgerr.New(pgerr.CharacterNotInRepertoire, "invalid byte value for encoding \"SQL_ASCII\": 0x%02x", s[i])
			}
		}
		return nil
	default: // SQL_ASCII and the single-byte encodings
		if i := strings.IndexByte(s, 0); i >= 0 {
			return invalidSequence(enc, s[i:], 1)
		}
		return nil
	}
	for i := 0; i < len(s); {
		if c := s[i]; c < 0x80 && c != 0 {
			i++
			continue
		}
		n := -1
		if s[i] != 0 {
			n = char(s[i:])
		}
		if n < 0 {
			return invalidSequence(enc, s[i:], mblen(s[i]))
		}
		i += n
	}
	return nil
}

// invalidSequence is PostgreSQL's report_invalid_encoding: the bytes of
// the character at the start of rest (at most n, at most 8, at most what
// is left).
func invalidSequence(enc, rest string, n int) error {
	n = min(n, len(rest), 8)
	var b strings.Builder
	for j := 0; j < n; j++ {
		if j > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "0x%02x", rest[j])
	}
	return pgerr.New(pgerr.CharacterNotInRepertoire, "invalid byte sequence for encoding %q: %s", enc, b.String())
}

// The per-encoding rules below are PostgreSQL's (src/common/wchar.c): a
// character is valid as its verifier says, and an invalid one is reported
// with as many bytes as its lead byte announces.

// utf8Char accepts what PostgreSQL's pg_utf8_islegal accepts (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF), which is what
// Go's decoder accepts.
func utf8Char(s string) int {
	r, n := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && n <= 1 {
		return -1
	}
	return n
}

func utf8Len(b byte) int {
	switch {
	case b&0xe0 == 0xc0:
		return 2
	case b&0xf0 == 0xe0:
		return 3
	case b&0xf8 == 0xf0:
		return 4
	}
	return 1
}

const (
	ss2 = 0x8e
	ss3 = 0x8f
)

func eucRange(b byte) bool { return b >= 0xa1 && b <= 0xfe }

func eucLen(b byte) int {
	switch {
	case b == ss2:
		return 2
	case b == ss3:
		return 3
	case b >= 0x80:
		return 2
	}
	return 1
}

func eucCNLen(b byte) int {
	if b >= 0x80 {
		return 2
	}
	return 1
}

// eucTWLen: as eucLen, but SS2 leads a 4-byte character in EUC_TW.
func eucTWLen(b byte) int {
	if b == ss2 {
		return 4
	}
	return eucLen(b)
}

func eucJPChar(s string) int {
	switch s[0] {
	case ss2: // JIS X 0201
		if len(s) < 2 || s[1] < 0xa1 || s[1] > 0xdf {
			return -1
		}
		return 2
	case ss3: // JIS X 0212
		if len(s) < 3 || !eucRange(s[1]) || !eucRange(s[2]) {
			return -1
		}
		return 3
	}
	// JIS X 0208
	if len(s) < 2 || !eucRange(s[0]) || !eucRange(s[1]) {
		return -1
	}
	return 2
}

func eucKRChar(s string) int {
	if len(s) < 2 || !eucRange(s[0]) || !eucRange(s[1]) {
		return -1
	}
	return 2
}

func eucTWChar(s string) int {
	switch s[0] {
	case ss2: // CNS 11643 planes 1-7
		if len(s) < 4 || s[1] < 0xa1 || s[1] > 0xa7 || !eucRange(s[2]) || !eucRange(s[3]) {
			return -1
		}
		return 4
	case ss3:
		return -1
	}
	// CNS 11643 plane 1; PostgreSQL checks only the second byte
	if len(s) < 2 || !eucRange(s[1]) {
		return -1
	}
	return 2
}

func muleLen(b byte) int {
	switch {
	case b >= 0x81 && b <= 0x8d: // official 1-byte charsets
		return 2
	case b == 0x9a || b == 0x9b: // private 1-byte charsets
		return 3
	case b >= 0x90 && b <= 0x99: // official 2-byte charsets
		return 3
	case b == 0x9c || b == 0x9d: // private 2-byte charsets
		return 4
	}
	return 1
}

func muleChar(s string) int {
	n := muleLen(s[0])
	if len(s) < n {
		return -1
	}
	for j := 1; j < n; j++ {
		if s[j] < 0x80 {
			return -1
		}
	}
	return n
}
