package supervisor

import (
	"sort"
	"sync"

	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
)

// Registry holds the supervisors of the timelines a process hosts, keyed
// by timeline ID.
type Registry struct {
	mu sync.RWMutex
	m  map[timeline.ID]*Supervisor
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: make(map[timeline.ID]*Supervisor)} }

// Add registers t.
func (r *Registry) Add(t *Supervisor) {
	r.mu.Lock()
	r.m[t.ID()] = t
	r.mu.Unlock()
}

// Get returns the timeline with id.
func (r *Registry) Get(id timeline.ID) (*Supervisor, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.m[id]
	return t, ok
}

// Only returns the single hosted timeline, for consumers that name none.
func (r *Registry) Only() (*Supervisor, bool) {
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
func (r *Registry) All() []*Supervisor {
	r.mu.RLock()
	out := make([]*Supervisor, 0, len(r.m))
	for _, t := range r.m {
		out = append(out, t)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID().String() < out[j].ID().String() })
	return out
}

// Remove unregisters timeline id.
func (r *Registry) Remove(id timeline.ID) {
	r.mu.Lock()
	delete(r.m, id)
	r.mu.Unlock()
}
