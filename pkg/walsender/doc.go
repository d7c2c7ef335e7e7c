// Package walsender serves WAL to unmodified PostgreSQL clients over the
// physical streaming replication protocol: pg_receivewal, psql with
// replication=true, a hot standby's walreceiver and pageserver-style
// consumers. It owns the listener, each connection's startup, the command
// loop (IDENTIFY_SYSTEM, SHOW, TIMELINE_HISTORY, START_REPLICATION), and the
// streaming loop with its feedback reader. A connection authenticated with
// a token (auth.MethodJWT) may open only the tenants its claims allow; the
// check comes before the timeline is looked up. Command text is checked in
// the client encoding as a physical walsender checks it (textcheck.go),
// and a message whose body does not parse gets PostgreSQL's answer without
// ending the session. The listener outlives accept failures (out of file
// descriptors), as PostgreSQL's postmaster does.
//
// Errors travel as *pgerr.Error and become ErrorResponses only here, at the
// connection edge. The streaming loop writes XLogData frames to the socket
// from one reusable buffer, or, on a plain socket, with the WAL straight
// from the memory window, a segment's huge-mapped pages (sendmsg) or the
// page cache (sendfile), so sending allocates nothing per message,
// and it waits for new WAL on the timeline's broadcast channel, never by
// polling. Each consumer has its own goroutines: a slow consumer blocks only
// itself.
package walsender
