// Package replcmd lexes and parses the simple-Query text that a physical
// walsender accepts (the replication command language of PostgreSQL 15-17)
// into a Command value. It does no I/O and no logging, and it does not
// validate names against server state (slot name rules, known SHOW
// variables): that is the caller's job.
//
// # Lexical rules
//
//   - A query holds exactly one command, optionally followed by one ';'.
//     Whitespace is [ \t\n\r\f\v].
//   - Keywords are case-sensitive and upper case. The query is a replication
//     command only if its first token is one of IDENTIFY_SYSTEM, SHOW,
//     TIMELINE_HISTORY, START_REPLICATION, CREATE_REPLICATION_SLOT,
//     DROP_REPLICATION_SLOT, READ_REPLICATION_SLOT, BASE_BACKUP,
//     ALTER_REPLICATION_SLOT or UPLOAD_MANIFEST. Anything else (SQL, lower
//     case keywords, an empty query) gives ErrNotReplicationCommand.
//   - Other keywords (SLOT, PHYSICAL, LOGICAL, TIMELINE, TEMPORARY,
//     RESERVE_WAL, WAIT, TWO_PHASE, EXPORT_SNAPSHOT, NOEXPORT_SNAPSHOT,
//     USE_SNAPSHOT) are also upper case only; the lower-case spelling is an
//     ordinary identifier.
//   - Identifiers [A-Za-z\x80-\xff_][A-Za-z\x80-\xff_0-9$]* are down-cased
//     (ASCII only) and truncated to 63 bytes. "Quoted" identifiers keep their
//     case and have no escape for a quote ("a""b" is two identifiers, as
//     in PostgreSQL's replication scanner); they are truncated to 63 bytes
//     too.
//     Each truncation adds PostgreSQL's NOTICE (42622) to Command.Notices.
//   - 'Strings' use two single quotes for a quote. Unsigned constants are
//     decimal and must fit in 32 bits. LSNs are hex/hex with at most 8 hex
//     digits per half.
//
// # Grammar
//
//	IDENTIFY_SYSTEM
//	SHOW var_name                                 var_name = ident ('.' ident)*
//	TIMELINE_HISTORY uconst
//	START_REPLICATION [SLOT ident] [PHYSICAL] lsn [TIMELINE uconst]
//	START_REPLICATION SLOT ident LOGICAL lsn ['(' ident ['sconst'] [, ...] ')']
//	CREATE_REPLICATION_SLOT ident [TEMPORARY] PHYSICAL [legacy_opt ...]
//	CREATE_REPLICATION_SLOT ident [TEMPORARY] PHYSICAL '(' option [, option ...] ')'
//	CREATE_REPLICATION_SLOT ident [TEMPORARY] LOGICAL ident (the same options)
//	DROP_REPLICATION_SLOT ident [WAIT]
//	READ_REPLICATION_SLOT var_name
//	BASE_BACKUP ..., ALTER_REPLICATION_SLOT ..., UPLOAD_MANIFEST ...
//
// option is a name (identifier or keyword, down-cased) with an optional
// identifier, string or unsigned value; legacy_opt is one of RESERVE_WAL,
// TWO_PHASE, EXPORT_SNAPSHOT, NOEXPORT_SNAPSHOT, USE_SNAPSHOT. Logical
// commands are parsed in full, and a logical slot's options checked, so
// that their errors come before the caller's "logical decoding requires
// wal_level >= logical", as in PostgreSQL. BASE_BACKUP,
// ALTER_REPLICATION_SLOT and UPLOAD_MANIFEST are recognised but the rest of
// the query is not examined, so that the caller can reject them.
//
// # Errors
//
// Parse returns *pgerr.Error values (use pgerr.As) carrying PostgreSQL's
// SQLSTATEs and texts:
//
//	not a replication command   0A000 cannot execute SQL commands in WAL sender for physical replication
//	                            (also matches errors.Is(err, ErrNotReplicationCommand))
//	grammar violation           42601 syntax error
//	unterminated quote          42601 unterminated quoted string (' or ", as PostgreSQL says)
//	TIMELINE 0                  42601 invalid timeline 0
//	repeated or non-physical    42601 conflicting or redundant options
//	slot option
//	bad reserve_wal value       42601 reserve_wal requires a Boolean value
//	unknown slot option         XX000 unrecognized option: <name>
//	START_REPLICATION SLOT ""   42704 replication slot "" does not exist (physical)
//	bad snapshot value          22023 unrecognized value for CREATE_REPLICATION_SLOT option "snapshot": "<v>"
//	snapshot without a value    42601 snapshot requires a parameter
//
// Syntax errors take precedence over the option errors, which PostgreSQL
// reports only after the whole command has parsed.
//
// Strings in the returned Command are substrings of the query whenever no
// down-casing, unescaping or joining was needed, so parsing the usual client
// commands does not allocate.
package replcmd
