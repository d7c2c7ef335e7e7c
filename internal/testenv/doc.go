// Package testenv holds what the test harnesses (internal/pgtest,
// internal/s3test, internal/etcdtest) share about the environment they run
// real components in.
//
//   - The rule for a missing test component (CI, Unavailable): skip on a
//     developer's machine, fail when CI=true, so CI can never pass by
//     skipping.
//   - The repository (RepoRoot, ModulePath, RepoFile, MakefileVar): where
//     its go.mod is, and the versions its Makefile pins, which the
//     harnesses' tests compare with their own.
//   - Pinned test-only programs (Tool): $<override> if set, else
//     <repo>/.tools/bin/<name>, which `make tools` builds; when it is
//     missing or not the pinned build, Tool.Path builds it with the go
//     command under an exclusive lock on .tools/<name>.lock, so test
//     binaries of several packages running at once build it once (in CI it
//     fails instead: CI builds the tools beforehand).
//   - Server processes (Process): started on free loopback ports
//     (FreePort, ErrAddrInUse) with their output in a log file whose tail a
//     failed test prints, killed by Stop like a crash, and suspended by
//     Pause (SIGSTOP, returning once every thread is stopped: WaitStopped)
//     until Resume.
//
// It imports nothing from the repository. The process helpers read /proc
// and use Linux's parent-death signal, as the harnesses always have.
package testenv
