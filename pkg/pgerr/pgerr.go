package pgerr

import (
	"errors"
	"fmt"
)

// Severities as PostgreSQL sends them in the S and V fields.
const (
	SeverityError = "ERROR"
	SeverityFatal = "FATAL"
	// SeverityNotice marks an Error sent as a NoticeResponse: the command
	// goes on.
	SeverityNotice = "NOTICE"
)

// SQLSTATE codes used by the server. Names follow PostgreSQL's errcodes.txt.
const (
	SuccessfulCompletion         = "00000"
	ProtocolViolation            = "08P01"
	FeatureNotSupported          = "0A000"
	InvalidParameterValue        = "22023"
	CharacterNotInRepertoire     = "22021"
	CannotConnectNow             = "57P03"
	InvalidAuthorizationSpec     = "28000"
	InvalidPassword              = "28P01"
	SyntaxError                  = "42601"
	InvalidName                  = "42602"
	NameTooLong                  = "42622"
	DuplicateObject              = "42710"
	UndefinedObject              = "42704"
	InsufficientPrivilege        = "42501"
	ObjectNotInPrerequisiteState = "55000"
	ObjectInUse                  = "55006"
	ConfigurationLimitExceeded   = "53400"
	AdminShutdown                = "57P01"
	QueryCanceled                = "57014"
	UndefinedFile                = "58P01"
	InternalError                = "XX000"
	ConnectionFailure            = "08006"
)

// Error is a PostgreSQL-style error: severity, SQLSTATE, message and the
// optional detail and hint fields.
type Error struct {
	Severity string
	Code     string
	Message  string
	Detail   string
	Hint     string
}

func (e *Error) Error() string {
	s := e.Severity + ": " + e.Message + " (SQLSTATE " + e.Code + ")"
	if e.Detail != "" {
		s += " DETAIL: " + e.Detail
	}
	return s
}

// New returns an ERROR-severity error with the given SQLSTATE.
func New(code, format string, args ...any) *Error {
	return &Error{Severity: SeverityError, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Fatal returns a FATAL-severity error with the given SQLSTATE.
func Fatal(code, format string, args ...any) *Error {
	return &Error{Severity: SeverityFatal, Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithDetail sets the DETAIL field and returns e.
func (e *Error) WithDetail(format string, args ...any) *Error {
	e.Detail = fmt.Sprintf(format, args...)
	return e
}

// WithHint sets the HINT field and returns e.
func (e *Error) WithHint(format string, args ...any) *Error {
	e.Hint = fmt.Sprintf(format, args...)
	return e
}

// As returns the *Error in err's chain, or nil.
func As(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}

// Internal wraps an arbitrary error as XX000, the code PostgreSQL uses for
// an ereport(ERROR) without an explicit errcode.
func Internal(err error) *Error {
	if pe := As(err); pe != nil {
		return pe
	}
	return New(InternalError, "%s", err.Error())
}
