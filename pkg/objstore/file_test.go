package objstore_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
)

func newFileStore(t *testing.T) (*objstore.FileStore, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "a", "b", "store") // missing ancestors too
	st := open(t, "file://"+root)
	return st.(*objstore.FileStore), root
}

// TestFileFormat pins the on-disk format documented in doc.go.
func TestFileFormat(t *testing.T) {
	st, root := newFileStore(t)
	mustCreate(t, st, "tl/seg", []byte("content"), map[string]string{"B": "2", "a": "1"})
	raw, err := os.ReadFile(filepath.Join(root, "tl", "seg"))
	if err != nil {
		t.Fatal(err)
	}
	js := `{"a":"1","b":"2"}`
	want := []byte("SKOBJ01\n")
	want = binary.LittleEndian.AppendUint32(want, uint32(len(js)))
	want = append(want, js...)
	want = append(want, "content"...)
	if !bytes.Equal(raw, want) {
		t.Fatalf("file bytes\n got %q\nwant %q", raw, want)
	}
	for p, mode := range map[string]os.FileMode{
		root:                             0o700 | os.ModeDir,
		filepath.Dir(root):               0o700 | os.ModeDir,
		filepath.Join(root, "tl"):        0o700 | os.ModeDir,
		filepath.Join(root, "tl", "seg"): 0o600,
	} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), mode)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(root, "tl"))
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
}

// TestFileHeaderless: a file put in place by hand is an object with the
// file's bytes as content and no metadata.
func TestFileHeaderless(t *testing.T) {
	st, root := newFileStore(t)
	for name, content := range map[string]string{
		"manual/000000010000000000000001": strings.Repeat("wal", 1000),
		"manual/short":                    "SKOB", // a prefix of the magic
		"manual/empty":                    "",
	} {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		data, info := mustGet(t, st, name)
		if string(data) != content || info.Size != int64(len(content)) || info.Meta == nil || len(info.Meta) != 0 {
			t.Errorf("%s: %q %+v", name, data, info)
		}
		if err := st.Create(ctx(t), name, []byte("x"), nil); !errors.Is(err, objstore.ErrExists) {
			t.Errorf("Create over a hand-placed file: %v", err)
		}
	}
	list, err := st.List(ctx(t), "manual/")
	if err != nil || len(list) != 3 || list[0].Size != 3000 {
		t.Fatalf("List: %+v %v", list, err)
	}
}

// TestFileCorruptHeader: magic followed by garbage is reported, not served.
func TestFileCorruptHeader(t *testing.T) {
	st, root := newFileStore(t)
	mustCreate(t, st, "ok", []byte("x"), nil)
	for name, content := range map[string]string{
		"truncated-length": "SKOBJ01\n\x05\x00",
		"truncated-json":   "SKOBJ01\n\x10\x00\x00\x00{}",
		"not-an-object":    "SKOBJ01\n\x02\x00\x00\x00[]",
		"huge-length":      "SKOBJ01\n\xff\xff\xff\xffcontent",
		"number-value":     "SKOBJ01\n\x07\x00\x00\x00{\"a\":1}",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.Get(ctx(t), name); !errors.Is(err, objstore.ErrCorrupt) {
			t.Errorf("Get(%s): %v, want ErrCorrupt", name, err)
		}
		if _, err := st.Head(ctx(t), name); !errors.Is(err, objstore.ErrCorrupt) {
			t.Errorf("Head(%s): %v, want ErrCorrupt", name, err)
		}
	}
	// List still lists them (with the file size): an operator sees them.
	if list, err := st.List(ctx(t), ""); err != nil || len(list) != 6 {
		t.Fatalf("List: %+v %v", list, err)
	}
}

// TestFileTempFiles: leftovers of a crashed Create are invisible and in
// nobody's way.
func TestFileTempFiles(t *testing.T) {
	st, root := newFileStore(t)
	mustCreate(t, st, "tl/a", []byte("a"), nil)
	for _, name := range []string{".b.tmp-0123456789abcdef", ".a.tmp-fedcba9876543210"} {
		if err := os.WriteFile(filepath.Join(root, "tl", name), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, ".x.tmp-dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, ".x.tmp-dir", "inside"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, st, "tl/b", []byte("b"), nil)
	list, err := st.List(ctx(t), "")
	if err != nil || len(list) != 2 || list[0].Key != "tl/a" || list[1].Key != "tl/b" {
		t.Fatalf("List: %+v %v", list, err)
	}
	if data, _ := mustGet(t, st, "tl/b"); string(data) != "b" {
		t.Fatalf("tl/b = %q", data)
	}
}

// TestFileConflicts: paths the file system cannot hold fail cleanly and
// are not reported as ErrExists.
func TestFileConflicts(t *testing.T) {
	st, _ := newFileStore(t)
	mustCreate(t, st, "a", []byte("file"), nil)
	if err := st.Create(ctx(t), "a/b", []byte("x"), nil); err == nil || errors.Is(err, objstore.ErrExists) {
		t.Fatalf("Create below an object: %v", err)
	}
	mustCreate(t, st, "d/e", []byte("x"), nil)
	if err := st.Create(ctx(t), "d", []byte("x"), nil); err == nil {
		t.Fatal("Create over a directory succeeded")
	}
	if err := st.Delete(ctx(t), "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Head(ctx(t), "d/e"); err != nil {
		t.Fatalf("Delete of a prefix removed something: %v", err)
	}
	if err := st.Delete(ctx(t), "d/e"); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx(t), "d/e"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Head(ctx(t), "d/e"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Head after Delete: %v", err)
	}
}

// TestFileDeleteStaysInside: Delete removes the object's own directory
// entry and nothing else: a symlinked object loses its link, not the file
// it points to (which may be outside the root); a symlink to a directory
// is a prefix, as for Get, and stays; temporary files and the emptied
// directories stay (List does not see them).
func TestFileDeleteStaysInside(t *testing.T) {
	st, root := newFileStore(t)
	outside := t.TempDir()
	target := filepath.Join(outside, "precious")
	if err := os.WriteFile(target, []byte("outside the store"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(outside, "dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "dir", "inner"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, st, "tl/wal/seg", []byte("x"), nil)
	tmp := filepath.Join(root, "tl", "wal", ".seg2.tmp-0123456789abcdef")
	if err := os.WriteFile(tmp, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, to := range map[string]string{"link": target, "dirlink": filepath.Join(outside, "dir"), "dangling": filepath.Join(outside, "nothing")} {
		if err := os.Symlink(to, filepath.Join(root, "tl", name)); err != nil {
			t.Fatal(err)
		}
	}
	if data, _ := mustGet(t, st, "tl/link"); string(data) != "outside the store" {
		t.Fatalf("Get through the symlink: %q", data)
	}
	for _, k := range []string{"tl/link", "tl/dirlink", "tl/dangling", "tl/wal/seg"} {
		if err := st.Delete(ctx(t), k); err != nil {
			t.Fatalf("Delete(%s): %v", k, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "tl", "link")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("symlink to a file still there: %v", err)
	}
	if data, err := os.ReadFile(target); err != nil || string(data) != "outside the store" {
		t.Errorf("the symlink's target was touched: %q %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(outside, "dir", "inner")); err != nil {
		t.Errorf("the directory symlink's target was touched: %v", err)
	}
	for _, name := range []string{"dirlink", "dangling"} {
		if _, err := os.Lstat(filepath.Join(root, "tl", name)); err != nil {
			t.Errorf("Delete removed %s, which is not an object: %v", name, err)
		}
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Errorf("temporary file removed: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(root, "tl", "wal")); err != nil || !fi.IsDir() {
		t.Errorf("emptied directory: %v %v", fi, err)
	}
	if list, err := st.List(ctx(t), "tl/wal/"); err != nil || len(list) != 0 {
		t.Fatalf("List of the emptied directory: %+v %v", list, err)
	}
	// The kept directory serves the next Create (makeDirs remembers it
	// as synced: it must still be there).
	mustCreate(t, st, "tl/wal/seg", []byte("again"), nil)
}

// TestFileRootStates: a missing root lists as empty and is created on the
// first Create; a root that is a file is refused at Open.
func TestFileRootStates(t *testing.T) {
	st, root := newFileStore(t)
	if list, err := st.List(ctx(t), "x/"); err != nil || len(list) != 0 {
		t.Fatalf("List of a missing root: %v %v", list, err)
	}
	if _, err := st.Head(ctx(t), "x"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Head in a missing root: %v", err)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reads created the root: %v", err)
	}
	if st.String() != "file://"+root {
		t.Fatalf("String() = %s", st.String())
	}
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := objstore.Open(ctx(t), "file://"+f, objstore.Options{}); err == nil {
		t.Fatal("Open of a file as a root succeeded")
	}
}
