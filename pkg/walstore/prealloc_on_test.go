package walstore

// The writer's tests run with segment preallocation on.
func init() { Preallocate = true }
