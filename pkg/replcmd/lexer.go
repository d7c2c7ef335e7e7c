package replcmd

import (
	"strings"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

// maxIdentLen is NAMEDATALEN-1: identifiers are truncated to this many bytes.
const maxIdentLen = 63

type tokKind uint8

const (
	tEOF     tokKind = iota
	tIdent           // identifier or quoted identifier: str
	tSConst          // 'string': str
	tUConst          // unsigned decimal constant: num
	tRecPtr          // hex/hex: num
	tKeyword         // upper-case keyword: kw
	tChar            // any other single byte: ch
)

type keyword uint8

const (
	kwNone keyword = iota
	// Keywords that start a replication command.
	kwIdentifySystem
	kwShow
	kwTimelineHistory
	kwStartReplication
	kwCreateReplicationSlot
	kwDropReplicationSlot
	kwReadReplicationSlot
	kwBaseBackup
	kwAlterReplicationSlot
	kwUploadManifest
	// Keywords used inside commands.
	kwSlot
	kwPhysical
	kwLogical
	kwTimeline
	kwTemporary
	kwReserveWAL
	kwWait
	kwTwoPhase
	kwExportSnapshot
	kwNoexportSnapshot
	kwUseSnapshot
)

// lookupKeyword returns the keyword spelled exactly s, or kwNone.
func lookupKeyword(s string) keyword {
	switch s {
	case "IDENTIFY_SYSTEM":
		return kwIdentifySystem
	case "SHOW":
		return kwShow
	case "TIMELINE_HISTORY":
		return kwTimelineHistory
	case "START_REPLICATION":
		return kwStartReplication
	case "CREATE_REPLICATION_SLOT":
		return kwCreateReplicationSlot
	case "DROP_REPLICATION_SLOT":
		return kwDropReplicationSlot
	case "READ_REPLICATION_SLOT":
		return kwReadReplicationSlot
	case "BASE_BACKUP":
		return kwBaseBackup
	case "ALTER_REPLICATION_SLOT":
		return kwAlterReplicationSlot
	case "UPLOAD_MANIFEST":
		return kwUploadManifest
	case "SLOT":
		return kwSlot
	case "PHYSICAL":
		return kwPhysical
	case "LOGICAL":
		return kwLogical
	case "TIMELINE":
		return kwTimeline
	case "TEMPORARY":
		return kwTemporary
	case "RESERVE_WAL":
		return kwReserveWAL
	case "WAIT":
		return kwWait
	case "TWO_PHASE":
		return kwTwoPhase
	case "EXPORT_SNAPSHOT":
		return kwExportSnapshot
	case "NOEXPORT_SNAPSHOT":
		return kwNoexportSnapshot
	case "USE_SNAPSHOT":
		return kwUseSnapshot
	}
	return kwNone
}

// name returns the keyword as an option name (its lower-case spelling).
func (k keyword) name() string {
	switch k {
	case kwIdentifySystem:
		return "identify_system"
	case kwShow:
		return "show"
	case kwTimelineHistory:
		return "timeline_history"
	case kwStartReplication:
		return "start_replication"
	case kwCreateReplicationSlot:
		return "create_replication_slot"
	case kwDropReplicationSlot:
		return "drop_replication_slot"
	case kwReadReplicationSlot:
		return "read_replication_slot"
	case kwBaseBackup:
		return "base_backup"
	case kwAlterReplicationSlot:
		return "alter_replication_slot"
	case kwUploadManifest:
		return "upload_manifest"
	case kwSlot:
		return "slot"
	case kwPhysical:
		return "physical"
	case kwLogical:
		return "logical"
	case kwTimeline:
		return "timeline"
	case kwTemporary:
		return "temporary"
	case kwReserveWAL:
		return "reserve_wal"
	case kwWait:
		return "wait"
	case kwTwoPhase:
		return "two_phase"
	case kwExportSnapshot:
		return "export_snapshot"
	case kwNoexportSnapshot:
		return "noexport_snapshot"
	case kwUseSnapshot:
		return "use_snapshot"
	}
	return ""
}

// command maps a command-starting keyword to its Kind (0 for others).
func (k keyword) command() Kind {
	switch k {
	case kwIdentifySystem:
		return IdentifySystem
	case kwShow:
		return Show
	case kwTimelineHistory:
		return TimelineHistory
	case kwStartReplication:
		return StartReplication
	case kwCreateReplicationSlot:
		return CreateReplicationSlot
	case kwDropReplicationSlot:
		return DropReplicationSlot
	case kwReadReplicationSlot:
		return ReadReplicationSlot
	case kwBaseBackup:
		return BaseBackup
	case kwAlterReplicationSlot:
		return AlterReplicationSlot
	case kwUploadManifest:
		return UploadManifest
	}
	return 0
}

type token struct {
	kind       tokKind
	kw         keyword
	ch         byte
	str        string
	num        uint64
	start, end int  // byte range in the query
	raw        bool // tIdent: str == query[start:end]
}

// lexErr is a lexical error; errNone means none.
type lexErr uint8

const (
	errNone lexErr = iota
	errSyntax
	errUnterminatedIdent
	errUnterminatedString
)

type lexer struct {
	s   string
	pos int
	// notices are the NOTICEs raised while scanning: one per identifier
	// truncated, as PostgreSQL's scanner warns.
	notices []*pgerr.Error
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func hexVal(c byte) (uint64, bool) {
	switch {
	case '0' <= c && c <= '9':
		return uint64(c - '0'), true
	case 'a' <= c && c <= 'f':
		return uint64(c-'a') + 10, true
	case 'A' <= c && c <= 'F':
		return uint64(c-'A') + 10, true
	}
	return 0, false
}

func isHex(c byte) bool { _, ok := hexVal(c); return ok }

func isIdentStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentCont(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

// next returns the next token. Tokens are matched by longest match: an LSN
// (hex/hex) wins over a number or identifier that is its prefix, and a
// keyword must be spelled exactly as the whole identifier.
func (l *lexer) next() (token, lexErr) {
	s := l.s
	for l.pos < len(s) && isSpace(s[l.pos]) {
		l.pos++
	}
	start := l.pos
	if start >= len(s) {
		return token{kind: tEOF, start: start, end: start}, errNone
	}
	c := s[start]
	switch {
	case c == '"':
		// PostgreSQL's replication scanner has no doubled-quote escape in
		// a quoted identifier: "a""b" is two identifiers.
		str, end, ok := l.quoted('"')
		if !ok {
			return token{}, errUnterminatedIdent
		}
		str = l.truncate(str)
		return token{kind: tIdent, str: str, start: start, end: end}, errNone
	case c == '\'':
		str, end, ok := l.quoted('\'')
		if !ok {
			return token{}, errUnterminatedString
		}
		return token{kind: tSConst, str: str, start: start, end: end}, errNone
	case isHex(c):
		if t, e, ok := l.recPtr(); ok {
			return t, e
		}
		if isDigit(c) {
			return l.uconst()
		}
	}
	if isIdentStart(c) {
		end := start + 1
		for end < len(s) && isIdentCont(s[end]) {
			end++
		}
		l.pos = end
		text := s[start:end]
		if kw := lookupKeyword(text); kw != kwNone {
			return token{kind: tKeyword, kw: kw, start: start, end: end}, errNone
		}
		str := l.truncate(downcase(text))
		return token{kind: tIdent, str: str, start: start, end: end, raw: str == text}, errNone
	}
	l.pos++
	return token{kind: tChar, ch: c, start: start, end: start + 1}, errNone
}

// quoted scans a token delimited by q starting at l.pos, where, in a
// string ('), a doubled q stands for one q. It returns the unescaped text
// (a substring of the query when there was no doubled q) and the end
// offset.
func (l *lexer) quoted(q byte) (string, int, bool) {
	s := l.s
	i := l.pos + 1
	first := i
	var b []byte // non-nil once an escape was seen
	for {
		j := strings.IndexByte(s[i:], q)
		if j < 0 {
			l.pos = len(s)
			return "", len(s), false
		}
		j += i
		if q == '\'' && j+1 < len(s) && s[j+1] == q {
			if b == nil {
				b = make([]byte, 0, len(s)-first)
			}
			b = append(b, s[i:j+1]...)
			i = j + 2
			continue
		}
		l.pos = j + 1
		if b == nil {
			return s[first:j], j + 1, true
		}
		b = append(b, s[i:j]...)
		return string(b), j + 1, true
	}
}

// recPtr matches hex+/hex+ at l.pos. ok is false if the text there is not
// an LSN; an LSN with a half longer than 8 hex digits is a syntax error.
func (l *lexer) recPtr() (token, lexErr, bool) {
	s := l.s
	start := l.pos
	i := start
	for i < len(s) && isHex(s[i]) {
		i++
	}
	if i+1 >= len(s) || s[i] != '/' || !isHex(s[i+1]) {
		return token{}, errNone, false
	}
	slash := i
	i++
	for i < len(s) && isHex(s[i]) {
		i++
	}
	l.pos = i
	if slash-start > 8 || i-slash-1 > 8 {
		return token{}, errSyntax, true
	}
	var hi, lo uint64
	for k := start; k < slash; k++ {
		v, _ := hexVal(s[k])
		hi = hi<<4 | v
	}
	for k := slash + 1; k < i; k++ {
		v, _ := hexVal(s[k])
		lo = lo<<4 | v
	}
	return token{kind: tRecPtr, num: hi<<32 | lo, start: start, end: i}, errNone, true
}

// uconst matches decimal digits at l.pos; values above 2^32-1 are a syntax
// error.
func (l *lexer) uconst() (token, lexErr) {
	s := l.s
	start := l.pos
	i := start
	var v uint64
	overflow := false
	for i < len(s) && isDigit(s[i]) {
		v = v*10 + uint64(s[i]-'0')
		if v > 1<<32-1 {
			overflow = true
			v = 1 << 32 // keep small; only the flag matters now
		}
		i++
	}
	l.pos = i
	if overflow {
		return token{}, errSyntax
	}
	return token{kind: tUConst, num: v, start: start, end: i}, errNone
}

// downcase lower-cases ASCII letters, returning s itself when it has none.
func downcase(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// lexMark is a position to come back to with reset.
type lexMark struct{ pos, notices int }

func (l *lexer) mark() lexMark { return lexMark{l.pos, len(l.notices)} }

// reset rewinds to m, dropping the notices raised since: the tokens will
// be scanned again.
func (l *lexer) reset(m lexMark) {
	l.pos = m.pos
	l.notices = l.notices[:m.notices]
}

// truncate cuts an identifier to maxIdentLen bytes and records
// PostgreSQL's NOTICE for it. A walsender for physical replication is
// connected to no database, so its encoding is SQL_ASCII and the cut is
// by bytes, not characters.
func (l *lexer) truncate(s string) string {
	if len(s) <= maxIdentLen {
		return s
	}
	t := s[:maxIdentLen]
	n := pgerr.New(pgerr.NameTooLong, "identifier \"%s\" will be truncated to \"%s\"", s, t)
	n.Severity = pgerr.SeverityNotice
	l.notices = append(l.notices, n)
	return t
}
