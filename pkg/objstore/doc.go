// Package objstore owns the object-store abstraction used to offload WAL and
// to read it back from an archive: a Store of immutable objects, created
// once and never overwritten (deleted only on an operator's explicit
// request), with a local-directory backend (file://) and an S3 backend
// (s3://). It is a leaf package: it imports nothing from this
// repository, logs nothing and keeps no global state.
//
// # Keys
//
// Keys are '/'-separated paths relative to the store root (the directory of
// a file store, the key prefix of an s3 store): non-empty, at most
// MaxKeyLen bytes of UTF-8 without control characters, not starting with
// "/", without empty, "." or ".." segments. A segment that starts with "."
// and contains ".tmp-" is reserved for the file backend's temporary files.
// ValidateKey applies these rules; every method rejects other keys with an
// error wrapping ErrInvalidKey.
//
// An object's key cannot also be a "directory" of other keys on the file
// backend ("a" and "a/b" cannot both exist), nor on S3 servers that map
// keys to files (versitygw's posix backend); give objects and prefixes
// distinct names.
//
// # Metadata
//
// Create takes user metadata as a map. Keys are folded to lower case and
// may hold only letters, digits and '-' (not first); values are printable
// ASCII without leading or trailing spaces; keys and values together are at
// most MaxMetaSize bytes. These limits are what S3 (user metadata travels
// as x-amz-meta-* HTTP headers) and HTTP proxies let through unchanged. Get
// and Head return the metadata; List does not (it reports Key and Size
// only, as ListObjectsV2 does).
//
// # Errors
//
// Errors wrap ErrExists (Create found the key taken; nothing changed),
// ErrNotFound (no such object), ErrInvalidKey, ErrInvalidMeta or ErrCorrupt,
// test them with errors.Is. Any other error, such as an unreachable server,
// is transient as far as this package can tell: callers retry.
//
// # File backend: file:///abs/path
//
// One file per object, at <root>/<key>. Create is atomic and never
// replaces: it writes a hidden temporary file ".<name>.tmp-<16 hex>" in the
// object's directory, fsyncs it, hard-links it to the final name (link(2)
// fails with EEXIST if the name is taken, which becomes ErrExists, so of
// concurrent Creates exactly one wins), removes the temporary name and
// fsyncs the directory. Missing directories, the root included, are created
// with mode 0700; the parent of every directory on the way is fsynced the
// first time the process uses it. Object files have mode 0600. Delete
// removes the object's file and fsyncs its directory (also when the file
// was already gone); directories are never removed. A crash can
// leave temporary files behind: List skips them and an operator may delete
// them; they never become objects. File operations are not interruptible:
// the file backend checks the context before it starts.
//
// Object file format (metadata is stored atomically with the content):
//
//	offset  size  field
//	0       8     magic "SKOBJ01\n"
//	8       4     n, uint32 little-endian: length of the metadata JSON
//	12      n     metadata: a JSON object of string values ({} when none)
//	12+n    ...   the object's content, as given to Create
//
// A file that does not start with the magic (for example one copied into
// the directory by hand) is an object whose content is the whole file and
// whose metadata is empty. A file that starts with the magic but whose
// header is truncated, announces more than 64 KiB of JSON, or whose JSON is
// not an object of strings is reported as ErrCorrupt by Get and Head.
//
// # S3 backend: s3://bucket[/prefix]
//
// Objects live at <prefix>/<key> in the bucket. Everything else comes from
// the standard AWS SDK configuration chain (config.LoadDefaultConfig):
// AWS_REGION (default us-east-1 when nothing names one), AWS_ACCESS_KEY_ID
// / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE and the shared
// config and credentials files, web identity and instance roles, the
// endpoint from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (or endpoint_url in
// the profile), and AWS_CA_BUNDLE for a private CA. Credentials in the URL
// are refused. Options.S3PathStyle selects path-style addressing, which
// most S3-compatible servers need.
//
// When the endpoint is not AWS's (*.amazonaws.com), request checksums are
// computed and response checksums validated only where the S3 API requires
// them: many S3-compatible servers reject the SDK's default trailing
// checksums.
//
// Create is a PutObject with If-None-Match: * (one request, the body sent
// from memory so retries can resend it). 412 Precondition Failed becomes
// ErrExists; 409 ConditionalRequestConflict (a concurrent write) is an
// ordinary error to retry. Note that after a lost response the SDK's retry
// can meet the object its own first attempt stored and report ErrExists;
// callers that must know compare the stored content or metadata.
// NoSuchKey, NotFound and 404 become ErrNotFound, except NoSuchBucket.
// Delete is a DeleteObject; S3 answers an absent key with success too.
//
// Requests are retried by the SDK at most 3 attempts (standard mode);
// connecting is bounded by 5 s and the wait for response headers by 30 s,
// and every call honours its context.
package objstore
