// Package pgerr defines the one error type that carries a PostgreSQL
// SQLSTATE through the code base. Packages return *pgerr.Error (possibly
// wrapped with %w) for anything a client must see with PostgreSQL's exact
// text and code; only the connection edge turns it into an ErrorResponse.
package pgerr
