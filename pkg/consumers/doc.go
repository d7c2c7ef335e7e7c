// Package consumers owns the registry of consumers streaming a timeline:
// who they are, what they were sent, and their latest feedback ('r'
// standby status, 'h' hot standby, 'z' pageserver). From that feedback it
// derives what other parts act on: the aggregated hot standby horizon the
// upstream receiver forwards to the primary, and the WAL position
// pageserver-style consumers still need locally, which retention honours
// while they are connected. It also remembers consumers that asked for WAL
// no tier holds any more (needs_rebootstrap).
package consumers
