package pgwire

import (
	"strconv"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

// Type OIDs used in replication result sets.
const (
	OIDText = 25
	OIDInt4 = 23
	OIDInt8 = 20
)

// ErrorResponse converts a *pgerr.Error into the wire message.
func ErrorResponse(e *pgerr.Error) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{
		Severity:            e.Severity,
		SeverityUnlocalized: e.Severity,
		Code:                e.Code,
		Message:             e.Message,
		Detail:              e.Detail,
		Hint:                e.Hint,
	}
}

// NoticeResponse encodes e, whose severity is pgerr.SeverityNotice, as a
// NoticeResponse.
func NoticeResponse(e *pgerr.Error) *pgproto3.NoticeResponse {
	return (*pgproto3.NoticeResponse)(ErrorResponse(e))
}

// Column describes one column of a replication command's result set.
type Column struct {
	Name   string
	OID    uint32
	Typmod int32
}

// TextCol, Int4Col and Int8Col build columns as PostgreSQL's walsender does
// (typmod -1).
func TextCol(name string) Column { return Column{Name: name, OID: OIDText, Typmod: -1} }
func Int4Col(name string) Column { return Column{Name: name, OID: OIDInt4, Typmod: -1} }
func Int8Col(name string) Column { return Column{Name: name, OID: OIDInt8, Typmod: -1} }

// RowDescription encodes cols.
func RowDescription(cols ...Column) *pgproto3.RowDescription {
	fs := make([]pgproto3.FieldDescription, len(cols))
	for i, c := range cols {
		size := int16(-1)
		switch c.OID {
		case OIDInt4:
			size = 4
		case OIDInt8:
			size = 8
		}
		fs[i] = pgproto3.FieldDescription{Name: []byte(c.Name), DataTypeOID: c.OID, DataTypeSize: size, TypeModifier: c.Typmod}
	}
	return &pgproto3.RowDescription{Fields: fs}
}

// DataRow encodes one row; a nil value is NULL.
func DataRow(vals ...[]byte) *pgproto3.DataRow { return &pgproto3.DataRow{Values: vals} }

// Text and Uint are helpers for DataRow values.
func Text(s string) []byte { return []byte(s) }
func Uint(v uint64) []byte { return strconv.AppendUint(nil, v, 10) }
