package replcmd

import (
	"errors"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

// ErrNotReplicationCommand is matched (errors.Is) by the error Parse returns
// when the query does not start with a replication command keyword: SQL,
// lower-case keywords, or an empty query. That error is also a *pgerr.Error
// (pgerr.As) with SQLSTATE 0A000 and the text NotReplicationCommandMessage.
var ErrNotReplicationCommand = errors.New("replcmd: not a replication command")

// NotReplicationCommandMessage is PostgreSQL's text for a non-replication
// query on a physical walsender.
const NotReplicationCommandMessage = "cannot execute SQL commands in WAL sender for physical replication"

// notReplError unwraps to both its *pgerr.Error and ErrNotReplicationCommand.
type notReplError struct{ pg *pgerr.Error }

func (e *notReplError) Error() string   { return e.pg.Error() }
func (e *notReplError) Unwrap() []error { return []error{e.pg, ErrNotReplicationCommand} }

func errNotReplication() error {
	return &notReplError{pg: pgerr.New(pgerr.FeatureNotSupported, "%s", NotReplicationCommandMessage)}
}

func errSyntaxMsg(msg string) error { return pgerr.New(pgerr.SyntaxError, "%s", msg) }

func syntaxError() error { return errSyntaxMsg("syntax error") }

func lexError(e lexErr) error {
	switch e {
	case errUnterminatedIdent, errUnterminatedString:
		// PostgreSQL's replication scanner says "string" for an
		// unterminated quoted identifier too (15.18, checked).
		return errSyntaxMsg("unterminated quoted string")
	}
	return syntaxError()
}

func invalidTimeline(tli uint64) error {
	return pgerr.New(pgerr.SyntaxError, "invalid timeline %d", tli)
}
