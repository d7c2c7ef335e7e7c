package timeline

import (
	"sort"
	"sync"
)

// Registry holds the timelines a process hosts, keyed by ID.
type Registry struct {
	mu sync.RWMutex
	m  map[ID]*Timeline
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: make(map[ID]*Timeline)} }

// Add registers t.
func (r *Registry) Add(t *Timeline) {
	r.mu.Lock()
	r.m[t.ID()] = t
	r.mu.Unlock()
}

// Get returns the timeline with id.
func (r *Registry) Get(id ID) (*Timeline, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.m[id]
	return t, ok
}

// Only returns the single hosted timeline, for consumers that name none.
func (r *Registry) Only() (*Timeline, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.m) != 1 {
		return nil, false
	}
	for _, t := range r.m {
		return t, true
	}
	return nil, false
}

// All returns the hosted timelines in a stable order.
func (r *Registry) All() []*Timeline {
	r.mu.RLock()
	out := make([]*Timeline, 0, len(r.m))
	for _, t := range r.m {
		out = append(out, t)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID().String() < out[j].ID().String() })
	return out
}
