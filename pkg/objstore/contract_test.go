package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/s3test"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
)

// backend opens fresh, empty stores of one kind.
type backend struct {
	name string
	// setup prepares the backend for the subtests of t and returns a
	// function giving each subtest its own empty store.
	setup func(t *testing.T) func(t *testing.T) objstore.Store
}

func backends() []backend {
	return []backend{
		{"file", func(t *testing.T) func(t *testing.T) objstore.Store {
			return func(t *testing.T) objstore.Store {
				return open(t, "file://"+filepath.Join(t.TempDir(), "store"))
			}
		}},
		{"s3", func(t *testing.T) func(t *testing.T) objstore.Store {
			srv := s3test.Start(t)
			srv.Setenv(t)
			var n atomic.Int64
			return func(t *testing.T) objstore.Store {
				// A fresh prefix per subtest: the store starts empty.
				return open(t, srv.URL(fmt.Sprintf("contract/%d/%s", n.Add(1), t.Name())))
			}
		}},
	}
}

func open(t testing.TB, url string) objstore.Store {
	t.Helper()
	st, err := objstore.Open(ctx(t), url, objstore.Options{S3PathStyle: true})
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	return st
}

// ctx returns a context bounded well below the test timeout, so a hung
// server shows up as a failure with a message rather than a panic.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// contractCases is the behaviour every Store must have.
var contractCases = []struct {
	name string
	run  func(t *testing.T, st objstore.Store)
}{
	{"CreateGetHead", testCreateGetHead},
	{"ExistsNeverOverwrites", testExistsNeverOverwrites},
	{"NotFound", testNotFound},
	{"EmptyObjectNoMeta", testEmptyObject},
	{"List", testList},
	{"BadKeys", testBadKeys},
	{"BadMeta", testBadMeta},
	{"ConcurrentCreateOneWins", testConcurrentCreate},
	{"ConcurrentCreateDistinctKeys", testConcurrentDistinct},
	{"WALSegmentSized", testLarge},
	{"CanceledContext", testCanceled},
	{"Delete", testDelete},
	{"DeleteAbsent", testDeleteAbsent},
	{"DeleteThenCreate", testDeleteThenCreate},
	{"ConcurrentDelete", testConcurrentDelete},
}

func TestContract(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			newStore := b.setup(t)
			for _, c := range contractCases {
				t.Run(c.name, func(t *testing.T) { c.run(t, newStore(t)) })
			}
		})
	}
}

func mustCreate(t *testing.T, st objstore.Store, key string, body []byte, meta map[string]string) {
	t.Helper()
	if err := st.Create(ctx(t), key, body, meta); err != nil {
		t.Fatalf("Create(%s): %v", key, err)
	}
}

func mustGet(t *testing.T, st objstore.Store, key string) ([]byte, objstore.Info) {
	t.Helper()
	rc, info, err := st.Get(ctx(t), key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%s): read: %v", key, err)
	}
	return data, info
}

func equalMeta(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func testCreateGetHead(t *testing.T, st objstore.Store) {
	key := "tenant/timeline/000000010000000000000003"
	body := make([]byte, 256)
	for i := range body {
		body[i] = byte(i)
	}
	body = append([]byte(objstore.HeaderMagic), body...) // content may look like a header
	meta := map[string]string{"Sha256": "c0ffee", "start-lsn": "0/3000000", "empty": ""}
	want := map[string]string{"sha256": "c0ffee", "start-lsn": "0/3000000", "empty": ""}
	mustCreate(t, st, key, body, meta)

	data, info := mustGet(t, st, key)
	if !bytes.Equal(data, body) {
		t.Fatalf("Get content differs: got %d bytes %q...", len(data), data[:min(len(data), 16)])
	}
	if info.Key != key || info.Size != int64(len(body)) || !equalMeta(info.Meta, want) {
		t.Fatalf("Get info = %+v, want key %s size %d meta %v", info, key, len(body), want)
	}
	hi, err := st.Head(ctx(t), key)
	if err != nil {
		t.Fatal(err)
	}
	if hi.Key != key || hi.Size != int64(len(body)) || !equalMeta(hi.Meta, want) {
		t.Fatalf("Head info = %+v, want key %s size %d meta %v", hi, key, len(body), want)
	}
	if meta["Sha256"] != "c0ffee" || len(meta) != 3 {
		t.Fatalf("Create modified the caller's map: %v", meta)
	}
}

func testExistsNeverOverwrites(t *testing.T, st objstore.Store) {
	key := "seg/1"
	mustCreate(t, st, key, []byte("first"), map[string]string{"v": "1"})
	for _, body := range [][]byte{[]byte("second, longer content"), []byte("first"), nil} {
		err := st.Create(ctx(t), key, body, map[string]string{"v": "2"})
		if !errors.Is(err, objstore.ErrExists) {
			t.Fatalf("second Create: %v, want ErrExists", err)
		}
	}
	data, info := mustGet(t, st, key)
	if string(data) != "first" || info.Meta["v"] != "1" || info.Size != 5 {
		t.Fatalf("after refused Creates: %q %+v", data, info)
	}
}

func testNotFound(t *testing.T, st objstore.Store) {
	mustCreate(t, st, "dir/obj", []byte("x"), nil)
	for _, key := range []string{"missing", "dir/missing", "dir", "dir/obj/below", "other/dir/obj"} {
		if _, _, err := st.Get(ctx(t), key); !errors.Is(err, objstore.ErrNotFound) {
			t.Errorf("Get(%s): %v, want ErrNotFound", key, err)
		}
		if _, err := st.Head(ctx(t), key); !errors.Is(err, objstore.ErrNotFound) {
			t.Errorf("Head(%s): %v, want ErrNotFound", key, err)
		}
	}
}

func testEmptyObject(t *testing.T, st objstore.Store) {
	mustCreate(t, st, "empty", nil, nil)
	data, info := mustGet(t, st, "empty")
	if len(data) != 0 || info.Size != 0 || info.Meta == nil || len(info.Meta) != 0 {
		t.Fatalf("empty object: %q %+v", data, info)
	}
}

func testList(t *testing.T, st objstore.Store) {
	keys := []string{"x/1", "x/10", "x/2", "x/a/b", "x/a/c", "y/1", "x.z", "xx", "z/deep/er/key"}
	sizes := map[string]int64{}
	for i, k := range rand.Perm(len(keys)) {
		body := bytes.Repeat([]byte{'k'}, i*3)
		mustCreate(t, st, keys[k], body, map[string]string{"i": fmt.Sprint(i)})
		sizes[keys[k]] = int64(len(body))
	}
	cases := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"x.z", "x/1", "x/10", "x/2", "x/a/b", "x/a/c", "xx", "y/1", "z/deep/er/key"}},
		{"x/", []string{"x/1", "x/10", "x/2", "x/a/b", "x/a/c"}},
		{"x", []string{"x.z", "x/1", "x/10", "x/2", "x/a/b", "x/a/c", "xx"}},
		{"x/1", []string{"x/1", "x/10"}},
		{"x/a/", []string{"x/a/b", "x/a/c"}},
		{"x/a/b", []string{"x/a/b"}},
		{"z/deep/", []string{"z/deep/er/key"}},
		{"nothing/", nil},
		{"nothing/here/", nil},
		{"x/1/", nil},
		{"q", nil},
	}
	for _, c := range cases {
		got, err := st.List(ctx(t), c.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", c.prefix, err)
		}
		var gotKeys []string
		for _, in := range got {
			gotKeys = append(gotKeys, in.Key)
			if in.Size != sizes[in.Key] {
				t.Errorf("List(%q): %s size %d, want %d", c.prefix, in.Key, in.Size, sizes[in.Key])
			}
			if in.Meta != nil {
				t.Errorf("List(%q): %s has Meta %v; List reports only Key and Size", c.prefix, in.Key, in.Meta)
			}
		}
		if strings.Join(gotKeys, " ") != strings.Join(c.want, " ") {
			t.Errorf("List(%q) = %v, want %v", c.prefix, gotKeys, c.want)
		}
	}
}

var badKeys = []string{
	"", "/abs", "a//b", "a/", "./a", "a/./b", "../a", "a/..", "a/../b", ".", "..",
	"a\x00b", "a\nb", "\xff", "a/.b.tmp-0123", strings.Repeat("k", objstore.MaxKeyLen+1),
}

func testBadKeys(t *testing.T, st objstore.Store) {
	for _, k := range badKeys {
		if err := st.Create(ctx(t), k, []byte("x"), nil); !errors.Is(err, objstore.ErrInvalidKey) {
			t.Errorf("Create(%q): %v, want ErrInvalidKey", k, err)
		}
		if _, _, err := st.Get(ctx(t), k); !errors.Is(err, objstore.ErrInvalidKey) {
			t.Errorf("Get(%q): %v, want ErrInvalidKey", k, err)
		}
		if _, err := st.Head(ctx(t), k); !errors.Is(err, objstore.ErrInvalidKey) {
			t.Errorf("Head(%q): %v, want ErrInvalidKey", k, err)
		}
		if err := st.Delete(ctx(t), k); !errors.Is(err, objstore.ErrInvalidKey) {
			t.Errorf("Delete(%q): %v, want ErrInvalidKey", k, err)
		}
	}
	for _, p := range []string{"/a", "a//", "../", "a/../", "./x", "a\x00"} {
		if _, err := st.List(ctx(t), p); !errors.Is(err, objstore.ErrInvalidKey) {
			t.Errorf("List(%q): %v, want ErrInvalidKey", p, err)
		}
	}
	// Keys that look odd but are fine.
	for _, k := range []string{"a..b", "...", ".hidden", "a/.b", "sp ace", "ünï/cödé", "a.tmp-1"} {
		mustCreate(t, st, k, []byte(k), nil)
		if data, _ := mustGet(t, st, k); string(data) != k {
			t.Errorf("Get(%q) = %q", k, data)
		}
	}
	all, err := st.List(ctx(t), "")
	if err != nil || len(all) != 7 {
		t.Errorf("List after odd keys: %v %v", all, err)
	}
}

func testBadMeta(t *testing.T, st objstore.Store) {
	bad := []map[string]string{
		{"": "x"},
		{"a b": "x"},
		{"a_b": "x"},
		{"-a": "x"},
		{"ключ": "x"},
		{"a": "x", "A": "y"},
		{"k": "caf\u00e9"},
		{"k": "line\nbreak"},
		{"k": " padded"},
		{"k": strings.Repeat("v", objstore.MaxMetaSize)},
	}
	for i, m := range bad {
		key := fmt.Sprintf("meta/%d", i)
		if err := st.Create(ctx(t), key, []byte("x"), m); !errors.Is(err, objstore.ErrInvalidMeta) {
			t.Errorf("Create with meta %q: %v, want ErrInvalidMeta", m, err)
		}
		if _, err := st.Head(ctx(t), key); !errors.Is(err, objstore.ErrNotFound) {
			t.Errorf("after refused Create with meta %q: Head: %v, want ErrNotFound", m, err)
		}
	}
}

func testConcurrentCreate(t *testing.T, st objstore.Store) {
	const n = 16
	key := "race/000000010000000000000001"
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = st.Create(ctx(t), key, []byte(fmt.Sprintf("writer %d", i)), map[string]string{"writer": fmt.Sprint(i)})
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("writers %d and %d both succeeded", winner, i)
			}
			winner = i
		case errors.Is(err, objstore.ErrExists):
		default:
			t.Errorf("writer %d: %v (want success or ErrExists)", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer succeeded")
	}
	data, info := mustGet(t, st, key)
	if string(data) != fmt.Sprintf("writer %d", winner) || info.Meta["writer"] != fmt.Sprint(winner) {
		t.Fatalf("stored %q meta %v, but writer %d won", data, info.Meta, winner)
	}
}

func testConcurrentDistinct(t *testing.T, st objstore.Store) {
	const n = 24
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = st.Create(ctx(t), fmt.Sprintf("new/dir/%d/k%02d", i%3, i), []byte{byte(i)}, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Create %d: %v", i, err)
		}
	}
	got, err := st.List(ctx(t), "new/")
	if err != nil || len(got) != n {
		t.Fatalf("List: %d objects, %v; want %d", len(got), err, n)
	}
}

func testLarge(t *testing.T, st objstore.Store) {
	body := make([]byte, 16<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(body); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			body[i+j] = byte(v >> (8 * j))
		}
	}
	mustCreate(t, st, "big/000000010000000000000001", body, map[string]string{"size": fmt.Sprint(len(body))})
	data, info := mustGet(t, st, "big/000000010000000000000001")
	if !bytes.Equal(data, body) || info.Size != int64(len(body)) {
		t.Fatalf("16 MiB object did not round-trip: %d bytes, info %+v", len(data), info)
	}
}

func testCanceled(t *testing.T, st objstore.Store) {
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if err := st.Create(c, "canceled", []byte("x"), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Create with canceled context: %v", err)
	}
	if _, err := st.Head(ctx(t), "canceled"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("object stored despite canceled context: %v", err)
	}
	if _, _, err := st.Get(c, "canceled"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with canceled context: %v", err)
	}
	mustCreate(t, st, "kept", []byte("x"), nil)
	if err := st.Delete(c, "kept"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Delete with canceled context: %v", err)
	}
	if _, err := st.Head(ctx(t), "kept"); err != nil {
		t.Fatalf("object deleted despite canceled context: %v", err)
	}
}

// listKeys returns the keys List reports for prefix.
func listKeys(t *testing.T, st objstore.Store, prefix string) []string {
	t.Helper()
	infos, err := st.List(ctx(t), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	var out []string
	for _, in := range infos {
		out = append(out, in.Key)
	}
	return out
}

func mustDelete(t *testing.T, st objstore.Store, key string) {
	t.Helper()
	if err := st.Delete(ctx(t), key); err != nil {
		t.Fatalf("Delete(%s): %v", key, err)
	}
}

func mustBeGone(t *testing.T, st objstore.Store, key string) {
	t.Helper()
	if _, _, err := st.Get(ctx(t), key); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Get(%s) after Delete: %v, want ErrNotFound", key, err)
	}
	if _, err := st.Head(ctx(t), key); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Head(%s) after Delete: %v, want ErrNotFound", key, err)
	}
}

// testDelete: a deleted object is gone for Get, Head and List, and
// nothing else goes with it: not its neighbours, not keys that merely
// share its string prefix, not the objects below a prefix that is
// "deleted" as if it were a key.
func testDelete(t *testing.T, st objstore.Store) {
	for _, k := range []string{"t/l/wal/1", "t/l/wal/2", "t/l/wal/10", "t/l/walx", "t/l2/wal/1", "empty"} {
		body := []byte(k)
		if k == "empty" {
			body = nil
		}
		mustCreate(t, st, k, body, map[string]string{"k": "v"})
	}
	mustDelete(t, st, "t/l/wal/1")
	mustBeGone(t, st, "t/l/wal/1")
	mustDelete(t, st, "empty")
	mustBeGone(t, st, "empty")
	want := "t/l/wal/10 t/l/wal/2 t/l/walx t/l2/wal/1"
	if got := strings.Join(listKeys(t, st, ""), " "); got != want {
		t.Fatalf("List after Delete = %s, want %s", got, want)
	}
	// A prefix of objects is not an object: deleting it removes nothing.
	for _, k := range []string{"t/l/wal", "t/l", "t"} {
		mustDelete(t, st, k)
	}
	if got := strings.Join(listKeys(t, st, ""), " "); got != want {
		t.Fatalf("List after deleting prefixes = %s, want %s", got, want)
	}
	if data, _ := mustGet(t, st, "t/l/wal/10"); string(data) != "t/l/wal/10" {
		t.Fatalf("neighbour of a deleted object: %q", data)
	}
	// Empty the "directory" entirely: List of it is empty, siblings stay.
	mustDelete(t, st, "t/l/wal/2")
	mustDelete(t, st, "t/l/wal/10")
	if got := listKeys(t, st, "t/l/wal/"); len(got) != 0 {
		t.Fatalf("List of an emptied prefix = %v", got)
	}
	if got := strings.Join(listKeys(t, st, "t/"), " "); got != "t/l/walx t/l2/wal/1" {
		t.Fatalf("List(t/) after emptying t/l/wal/ = %s", got)
	}
}

// testDeleteAbsent: deleting what is not there succeeds and changes
// nothing.
func testDeleteAbsent(t *testing.T, st objstore.Store) {
	// Before anything exists (the file backend's root is not even made).
	for _, k := range []string{"never", "never/was/here"} {
		mustDelete(t, st, k)
	}
	mustCreate(t, st, "dir/obj", []byte("x"), nil)
	for _, k := range []string{"missing", "dir/missing", "dir/obj/below", "other/dir/obj"} {
		mustDelete(t, st, k)
	}
	// Twice in a row: the second finds nothing.
	mustDelete(t, st, "dir/obj")
	mustDelete(t, st, "dir/obj")
	mustBeGone(t, st, "dir/obj")
	if got := listKeys(t, st, ""); len(got) != 0 {
		t.Fatalf("List = %v, want nothing", got)
	}
}

// testDeleteThenCreate: after a Delete the key is free: Create-if-absent
// stores the new object (other content, other metadata) and refuses a
// second one again. Also in a "directory" the Delete emptied.
func testDeleteThenCreate(t *testing.T, st objstore.Store) {
	for _, key := range []string{"re/use/key", "re/use/other"} {
		mustCreate(t, st, key, []byte("old content"), map[string]string{"gen": "1"})
	}
	for _, key := range []string{"re/use/key", "re/use/other"} {
		mustDelete(t, st, key)
		mustBeGone(t, st, key)
	}
	mustCreate(t, st, "re/use/key", []byte("new"), map[string]string{"gen": "2"})
	data, info := mustGet(t, st, "re/use/key")
	if string(data) != "new" || info.Size != 3 || info.Meta["gen"] != "2" || len(info.Meta) != 1 {
		t.Fatalf("re-created object: %q %+v", data, info)
	}
	if err := st.Create(ctx(t), "re/use/key", []byte("third"), nil); !errors.Is(err, objstore.ErrExists) {
		t.Fatalf("Create over the re-created object: %v, want ErrExists", err)
	}
	if got := strings.Join(listKeys(t, st, "re/"), " "); got != "re/use/key" {
		t.Fatalf("List = %s, want re/use/key", got)
	}
}

// testConcurrentDelete: many deleters of one key all succeed, and one of
// several objects deleted concurrently does not disturb the others.
func testConcurrentDelete(t *testing.T, st objstore.Store) {
	const n = 12
	for i := range n {
		mustCreate(t, st, fmt.Sprintf("cd/%02d", i), []byte{byte(i)}, nil)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	for i := range 2 * n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "cd/00" // half of them race on one key
			if i%2 == 1 && i/2 != 0 {
				key = fmt.Sprintf("cd/%02d", i/2)
			}
			errs[i] = st.Delete(ctx(t), key)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Delete %d: %v", i, err)
		}
	}
	if got := listKeys(t, st, "cd/"); len(got) != 0 {
		t.Fatalf("List after concurrent deletes = %v", got)
	}
}
