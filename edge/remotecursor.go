package edge

// remoteCursor is where a partition's claims from one other region have
// been merged, by origin sequence (the sequence in that region's claim log),
// along the two paths that bring them: the xclaims stream (sourced by
// JetStream, durable, the path of record) and the tail (direct reads of the
// region's claim log while replication recovers from a WAN fault; see
// tail.go). Each path delivers records in origin order; the cursor merges
// each record once. It is pure: the partition's goroutine owns it.
type remoteCursor struct {
	x      uint64 // the last origin sequence the xclaims stream delivered
	lo, hi uint64 // the range the tail merged beyond x (lo 0: none)
	top    uint64 // the highest origin sequence either path brought, ever
}

// fromXClaims reports whether a record the xclaims stream delivers, at
// origin sequence seq, is to be merged: not when the tail merged it already.
// A sequence at or below the last one xclaims delivered means the region's
// log is sourced again from its start (after a failback, which remakes it
// with the same sequences) or was made anew: merged as it comes.
func (c *remoteCursor) fromXClaims(seq uint64) bool {
	if seq <= c.x {
		c.x, c.lo, c.hi = seq, 0, 0
		return true
	}
	c.x, c.top = seq, max(c.top, seq)
	if c.lo != 0 && seq >= c.lo && seq <= c.hi {
		return false
	}
	if seq > c.hi {
		c.lo, c.hi = 0, 0 // past the tail's range
	}
	return true
}

// fromTail reports whether a record the tail read, at origin sequence seq,
// is to be merged: only beyond everything either path ever brought, so a
// log sourced again from its start is not read again from its start by the
// tail (its old records would be merged at today's time).
func (c *remoteCursor) fromTail(seq uint64) bool {
	if seq <= max(c.x, c.top) {
		return false
	}
	if c.lo == 0 {
		c.lo = seq
	}
	c.hi, c.top = seq, seq
	return true
}

// next is the origin sequence the tail reads from.
func (c *remoteCursor) next() uint64 { return max(c.x, c.top) + 1 }
