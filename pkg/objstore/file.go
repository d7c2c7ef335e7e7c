package objstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// FileStore keeps each object in one file below a root directory. See the
// package documentation for the file format and the durability rules.
type FileStore struct {
	root string // absolute, cleaned

	// synced holds directories (below and including root) whose entry in
	// their parent this process has fsynced, so later Creates skip it.
	synced sync.Map
}

var _ Store = (*FileStore)(nil)

// NewFileStore returns a store rooted at the absolute directory root. The
// directory need not exist yet: the first Create makes it (mode 0700).
func NewFileStore(root string) (*FileStore, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("objstore: file store root %q is not absolute", root)
	}
	root = filepath.Clean(root)
	if fi, err := os.Stat(root); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("objstore: file store root %s is not a directory", root)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("objstore: file store root: %w", err)
	}
	return &FileStore{root: root}, nil
}

// String returns the store's file URL.
func (s *FileStore) String() string { return "file://" + filepath.ToSlash(s.root) }

// Root returns the store's directory.
func (s *FileStore) Root() string { return s.root }

func (s *FileStore) path(key string) string {
	return filepath.Join(s.root, filepath.FromSlash(key))
}

// Create implements Store.
func (s *FileStore) Create(ctx context.Context, key string, body []byte, meta map[string]string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: create %s: %w", key, err)
	}
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("objstore: create: %w", err)
	}
	meta, err := normalizeMeta(meta)
	if err != nil {
		return fmt.Errorf("objstore: create %s: %w", key, err)
	}
	hdr, err := encodeHeader(meta)
	if err != nil {
		return fmt.Errorf("objstore: create %s: %w", key, err)
	}
	final := s.path(key)
	dir := filepath.Dir(final)
	// Cheap early answer; the link below is what decides. The entry may
	// be one a crash left before its directory was fsynced: make it
	// durable before the caller counts the object as stored.
	if _, err := os.Lstat(final); err == nil {
		return s.exists(key, dir)
	}
	if err := s.makeDirs(dir); err != nil {
		return fmt.Errorf("objstore: create %s: %w", key, err)
	}

	tmp, err := writeTemp(dir, filepath.Base(final), hdr, body)
	if err != nil {
		return fmt.Errorf("objstore: create %s: %w", key, err)
	}
	linkErr := os.Link(tmp, final)
	rmErr := os.Remove(tmp)
	if linkErr != nil {
		if errors.Is(linkErr, fs.ErrExist) {
			return s.exists(key, dir)
		}
		return fmt.Errorf("objstore: create %s: %w", key, linkErr)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("objstore: create %s: %w", key, err)
	}
	if rmErr != nil {
		// The object is in place and durable; a leftover temp file is only
		// clutter that List skips. Still report it so it does not go
		// unnoticed.
		return fmt.Errorf("objstore: create %s: object stored, but removing temp file: %w", key, rmErr)
	}
	return nil
}

// exists reports ErrExists for key after fsyncing its directory, so that
// an object found in place (perhaps left by a crash before the fsync) is
// durable before a caller relies on it.
func (s *FileStore) exists(key, dir string) error {
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("objstore: create %s: %w", key, err)
	}
	return fmt.Errorf("objstore: create %s: %w", key, ErrExists)
}

// writeTemp writes hdr and body to a new hidden file in dir, fsyncs it and
// returns its path.
func writeTemp(dir, base string, hdr, body []byte) (string, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	name := filepath.Join(dir, tempName(base, hex.EncodeToString(rnd[:])))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	_, err = f.Write(hdr)
	if err == nil {
		_, err = f.Write(body)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// tempName is the hidden name of a temporary file for object file base.
func tempName(base, random string) string { return "." + base + ".tmp-" + random }

// isTempName reports whether a file name has the shape of tempName's.
func isTempName(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-")
}

// makeDirs creates dir and its missing parents (mode 0700), the store
// root and its missing ancestors included, and makes every directory on the
// way durable in its parent. Below the root, the parent of each directory
// this process has not synced yet is fsynced whether this call created the
// directory or not: another goroutine, or an earlier process that crashed,
// may have created it without syncing. Above the root, only the parents of
// directories this call created are synced.
func (s *FileStore) makeDirs(dir string) error {
	rel, err := filepath.Rel(s.root, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return fmt.Errorf("directory %s is outside the store root %s", dir, s.root)
	}
	var chain []string // directories to make, outermost first
	if _, ok := s.synced.Load(s.root); !ok {
		var missing []string
		for a := filepath.Dir(s.root); ; a = filepath.Dir(a) {
			if _, err := os.Stat(a); err == nil || !errors.Is(err, fs.ErrNotExist) || a == filepath.Dir(a) {
				break
			}
			missing = append(missing, a)
		}
		for i := len(missing) - 1; i >= 0; i-- {
			chain = append(chain, missing[i])
		}
	}
	nAbove := len(chain)
	chain = append(chain, s.root)
	if rel != "." {
		p := s.root
		for _, seg := range strings.Split(rel, string(filepath.Separator)) {
			p = filepath.Join(p, seg)
			chain = append(chain, p)
		}
	}
	for i, p := range chain {
		if _, ok := s.synced.Load(p); ok {
			continue
		}
		created := false
		err := os.Mkdir(p, 0o700)
		switch {
		case err == nil:
			created = true
		case errors.Is(err, fs.ErrExist):
			fi, serr := os.Stat(p)
			if serr != nil {
				return serr
			}
			if !fi.IsDir() {
				return fmt.Errorf("%s exists and is not a directory", p)
			}
		default:
			return err
		}
		if created || i > nAbove {
			if err := syncDir(filepath.Dir(p)); err != nil {
				return err
			}
		}
		if i >= nAbove {
			s.synced.Store(p, true)
		}
	}
	return nil
}

// syncDir fsyncs a directory so the entries created or removed in it are
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// open opens key's file and reads its header. The returned file is
// positioned at the start of the content.
func (s *FileStore) open(key string) (*os.File, Info, error) {
	if err := ValidateKey(key); err != nil {
		return nil, Info{}, err
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, Info{}, fmt.Errorf("%s: %w", key, ErrNotFound)
		}
		return nil, Info{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, Info{}, err
	}
	if !fi.Mode().IsRegular() {
		// A directory is a key prefix, not an object (as in S3).
		f.Close()
		return nil, Info{}, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	meta, hdrLen, err := readHeader(f)
	if err == nil {
		_, err = f.Seek(hdrLen, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, Info{}, fmt.Errorf("%s: %w", key, err)
	}
	return f, Info{Key: key, Size: fi.Size() - hdrLen, Meta: meta}, nil
}

// Get implements Store. The returned reader is the object's file.
func (s *FileStore) Get(ctx context.Context, key string) (io.ReadCloser, Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, Info{}, fmt.Errorf("objstore: get %s: %w", key, err)
	}
	f, info, err := s.open(key)
	if err != nil {
		return nil, Info{}, fmt.Errorf("objstore: get: %w", err)
	}
	return f, info, nil
}

// Head implements Store.
func (s *FileStore) Head(ctx context.Context, key string) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("objstore: head %s: %w", key, err)
	}
	f, info, err := s.open(key)
	if err != nil {
		return Info{}, fmt.Errorf("objstore: head: %w", err)
	}
	f.Close()
	return info, nil
}

// List implements Store. Temporary files are skipped, and so are files
// that are not regular files and names that are not valid keys. The size of
// a file whose header cannot be read is reported as the file's size.
func (s *FileStore) List(ctx context.Context, prefix string) ([]Info, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("objstore: list: %w", err)
	}
	start := s.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = s.path(prefix[:i])
	}
	var out []Info
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == start && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) {
				return fs.SkipAll // nothing stored under the prefix
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			if p != start && isTempName(d.Name()) {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || isTempName(d.Name()) {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) || ValidateKey(key) != nil {
			return nil
		}
		size, err := s.contentSize(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		out = append(out, Info{Key: key, Size: size})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("objstore: list %q: %w", prefix, err)
	}
	sortInfos(out)
	return out, nil
}

// contentSize returns the size of the content of the object file at p.
func (s *FileStore) contentSize(p string) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	_, hdrLen, err := readHeader(f)
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return fi.Size(), nil
		}
		return 0, err
	}
	return fi.Size() - hdrLen, nil
}

// Delete implements Store: it removes the object's file and fsyncs its
// directory. What counts as the object is what Get sees: the key's path,
// symlinks followed, must be a regular file; a symlink is removed itself,
// never its target. A directory is a key prefix, not an object, and is
// left alone. Directories are never removed, even when a Delete empties
// them: removing one would race with a Create that has just made it, and
// makeDirs's record of synced directories would go stale. List skips
// empty directories.
//
// When the object is already absent its directory is still fsynced, as
// Create does for an object it finds in place: a concurrent Delete may
// have removed it without syncing yet.
func (s *FileStore) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: delete %s: %w", key, err)
	}
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("objstore: delete: %w", err)
	}
	p := s.path(key)
	dir := filepath.Dir(p)
	fi, err := os.Stat(p)
	switch {
	case isAbsent(err):
		if err := syncDir(dir); err != nil && !isAbsent(err) {
			return fmt.Errorf("objstore: delete %s: %w", key, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("objstore: delete %s: %w", key, err)
	case !fi.Mode().IsRegular():
		return nil // a directory is a key prefix, not an object
	}
	if err := os.Remove(p); err != nil && !isAbsent(err) {
		return fmt.Errorf("objstore: delete %s: %w", key, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("objstore: delete %s: %w", key, err)
	}
	return nil
}

// isAbsent reports whether err says a path does not exist: a missing
// entry, or a component on the way that is a file, not a directory.
func isAbsent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
