package retention

// Passes returns how many evaluations r has run.
func Passes(r *Retainer) uint64 { return r.passes.Load() }
